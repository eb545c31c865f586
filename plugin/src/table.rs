//! Tables as kubectl prints them: upper-case headers, columns padded to their widest cell,
//! three spaces apart, `<none>` for an empty cell.

/// Renders `rows` under `headers`.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |text: &str| -> String {
        if text.is_empty() {
            "<none>".to_owned()
        } else {
            text.to_owned()
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| cell(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (text, width)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(text);
            if i < last {
                out.push_str(&" ".repeat(width - text.chars().count() + 3));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_empty_cells_say_none() {
        let table = render(
            &["port", "claim"],
            &[
                vec!["9000".into(), "games/web".into()],
                vec!["27015".into(), String::new()],
            ],
        );
        assert_eq!(table, "PORT    CLAIM\n9000    games/web\n27015   <none>\n");
    }
}
