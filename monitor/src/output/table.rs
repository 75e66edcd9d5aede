//! Plain-text tables with aligned columns, in the style of `ip -br` and `ss`.

/// A table of strings rendered with columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct TextTable {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    right_aligned: Vec<bool>,
}

impl TextTable {
    /// Starts a table. A header starting with `>` is right-aligned (numbers); the
    /// `>` is not printed.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header
                .iter()
                .map(|h| h.trim_start_matches('>').to_owned())
                .collect(),
            right_aligned: header.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table, each line indented by `indent` spaces.
    pub fn render(&self, indent: usize) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|col| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|row| row[col].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = " ".repeat(indent);
            for (col, cell) in row.iter().enumerate() {
                let pad = widths[col] - cell.chars().count();
                if col > 0 {
                    line.push_str("  ");
                }
                if self.right_aligned[col] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if col + 1 < row.len() {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_numbers_go_right() {
        let mut t = TextTable::new(&["NAME", ">PKTS", "STATE"]);
        t.row(vec!["ens5".into(), "7".into(), "up".into()]);
        t.row(vec!["enp39s0".into(), "12345".into()]);
        assert_eq!(
            t.render(2),
            "  NAME      PKTS  STATE\n  ens5         7  up\n  enp39s0  12345\n"
        );
    }
}
