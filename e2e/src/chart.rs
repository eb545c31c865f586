//! The Helm chart (`charts/hostport-allocator`) as the Helm v4 SDK renders it
//! (`helm-python-sdk` from PyPI through `e2e/python/helm_chart.py`: no helm binary, no
//! cluster), for the chart's tests and its install on a real node.

use std::path::Path;

use serde_json::{Value, json};

/// The pinned Python tools: the Helm SDK, and check-jsonschema (its YAML parser reads the
/// rendered manifests back).
pub const REQUIREMENTS: &[&str] = &["helm-python-sdk==0.2.2", "check-jsonschema==0.39.0"];

/// The chart's directory, relative to the workspace root.
pub const CHART: &str = "charts/hostport-allocator";

/// What the SDK made of the chart with some values.
#[derive(Debug)]
pub struct Rendered {
    /// The templates' objects, in template order (NOTES.txt apart).
    pub objects: Vec<Value>,
    /// The CRDs of the chart's `crds/`.
    pub crds: Vec<Value>,
    /// The rendered NOTES.txt.
    pub notes: String,
    /// `helm lint --strict`'s report.
    pub lint: Value,
    /// Why `values.schema.json` refused the values.
    pub schema_error: Option<String>,
    /// Why a template failed (a `required` or `fail`).
    pub render_error: Option<String>,
    /// The packaged chart, when asked for.
    pub package: Option<String>,
}

/// The workspace root.
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `python` with [`REQUIREMENTS`].
pub fn python() -> Result<std::path::PathBuf, String> {
    crate::tools::python(REQUIREMENTS)
}

/// Renders the chart with `values` (null: the defaults) into `namespace` as release
/// `hostport-allocator`, packaging it into `package_to` when given.
pub fn render(
    values: &Value,
    namespace: &str,
    package_to: Option<&Path>,
) -> Result<Rendered, String> {
    let request = json!({
        "chart": root().join(CHART),
        "values": values,
        "namespace": namespace,
        "package_to": package_to,
    });
    let output =
        crate::tools::run_python(&python()?, "helm_chart.py", request.to_string().as_bytes())?;
    let r: Value = serde_json::from_str(&output).map_err(|e| format!("{e}: {output}"))?;
    let text = |key: &str| r[key].as_str().map(str::to_owned);
    let list = |key: &str| r[key].as_array().cloned().unwrap_or_default();
    Ok(Rendered {
        objects: list("objects"),
        crds: list("crds"),
        notes: text("notes").unwrap_or_default(),
        lint: r["lint"].clone(),
        schema_error: text("schema_error"),
        render_error: text("render_error"),
        package: text("package"),
    })
}

/// `objects` as one multi-document YAML file (what `kubectl apply -f` takes).
pub fn to_yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_saphyr::to_string(o).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `kubectl kustomize <dir>` (relative to the workspace root) as objects: what the chart's
/// renders are compared with.
pub fn kustomize(dir: &str) -> Vec<Value> {
    let yaml = crate::run_command(
        std::process::Command::new("kubectl")
            .args(["kustomize", dir])
            .current_dir(root()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let objects: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("YAML");
    objects.into_iter().filter(|o| !o.is_null()).collect()
}
