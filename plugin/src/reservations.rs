//! `kubectl hostport reserve <port> --class <class>` and `release <port>`: an admin's hold on
//! a port, a HostPort `port-<n>` without a claimRef (what the webhook lets admins write), and
//! its removal — never of a port a claim holds.

use hostport_api::{HostPort, HostPortSpec};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

use crate::error::Error;

/// The HostPort name that holds `port`.
pub fn host_port_name(port: u16) -> String {
    format!("port-{port}")
}

/// Reserves `port` in `class`; the message says what was done.
pub async fn reserve(client: &Client, port: u16, class: &str) -> Result<String, Error> {
    if port == 0 {
        return Err(Error::Refused("port 0 is not a port: give 1-65535".into()));
    }
    let api: Api<HostPort> = Api::all(client.clone());
    let name = host_port_name(port);
    let reservation = HostPort::new(
        &name,
        HostPortSpec {
            host_port_class_name: class.to_owned(),
            claim_ref: None,
            port: Some(i32::from(port)),
        },
    );
    match api.create(&PostParams::default(), &reservation).await {
        Ok(_) => Ok(format!(
            "reserved port {port} (HostPort {name}, class {class}): no claim gets it until `kubectl hostport release {port}`\n"
        )),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let holder = api
                .get_opt(&name)
                .await
                .map_err(Error::api(format!("reading HostPort {name}")))?;
            let by = holder.as_ref().and_then(|hp| hp.claim_key()).map_or_else(
                || "an earlier reservation".to_owned(),
                |(ns, n)| format!("claim {ns}/{n}"),
            );
            Err(Error::Refused(format!(
                "port {port} is already held (HostPort {name}, by {by}): pick another port (kubectl hostport free {class})"
            )))
        }
        Err(source) => Err(Error::Api {
            action: format!("creating HostPort {name}"),
            source,
        }),
    }
}

/// Releases the reservation of `port`; refuses a port a claim holds.
pub async fn release(client: &Client, port: u16) -> Result<String, Error> {
    let api: Api<HostPort> = Api::all(client.clone());
    let name = host_port_name(port);
    let Some(held) = api
        .get_opt(&name)
        .await
        .map_err(Error::api(format!("reading HostPort {name}")))?
    else {
        return Err(Error::NotFound {
            kind: "HostPort",
            name,
            hint: format!(": port {port} is not held"),
        });
    };
    if let Some((ns, claim)) = held.claim_key() {
        return Err(Error::Refused(format!(
            "port {port} is held by claim {ns}/{claim}, not reserved: delete the claim to free it (kubectl -n {ns} delete hostportclaim {claim})"
        )));
    }
    // Only the reservation we read: not a claim's HostPort made under the name meanwhile.
    let uid = held.uid();
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    api.delete(&name, &params)
        .await
        .map_err(Error::api(format!("deleting HostPort {name}")))?;
    Ok(format!("released port {port} (HostPort {name} deleted)\n"))
}
