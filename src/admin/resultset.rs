//! Console answers as result sets psql prints as tables: RowDescription with text columns,
//! DataRows and CommandComplete, encoded with pgwire; no I/O.

use bytes::{BufMut, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::response::{CommandComplete, EmptyQueryResponse};

/// The OID of `text`: every console column is text.
const TEXT_OID: u32 = 25;

/// A table of text values; `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row of non-null values; the caller keeps it as wide as the columns.
    pub fn push<I, V>(&mut self, values: I)
    where
        I: IntoIterator<Item = V>,
        V: ToString,
    {
        self.rows
            .push(values.into_iter().map(|v| Some(v.to_string())).collect());
    }
}

fn put<M: Message>(m: &M, out: &mut BytesMut) {
    // Encoding into memory fails only for a message over pgwire's size limit, which console
    // output never reaches; drop such a message rather than panic.
    let _ = m.encode(out);
}

/// RowDescription, one DataRow per row, and CommandComplete with `tag`.
pub fn write_table(out: &mut BytesMut, table: &Table, tag: &str) {
    let fields = table
        .columns
        .iter()
        .map(|name| {
            let mut f = FieldDescription::default();
            f.name = (*name).to_owned();
            f.type_id = TEXT_OID;
            f.type_size = -1;
            f.type_modifier = -1;
            f
        })
        .collect();
    put(&RowDescription::new(fields), out);
    for row in &table.rows {
        let mut data = BytesMut::new();
        for value in row {
            match value {
                Some(v) => {
                    data.put_i32(v.len() as i32);
                    data.put_slice(v.as_bytes());
                }
                None => data.put_i32(-1),
            }
        }
        put(&DataRow::new(data, row.len() as i16), out);
    }
    command_complete(out, tag);
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    put(&CommandComplete::new(tag.to_owned()), out);
}

pub fn empty_query(out: &mut BytesMut) {
    put(&EmptyQueryResponse::new(), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::backend::Message as Backend;

    #[test]
    fn decodes_as_a_result_set() {
        let mut t = Table::new(&["name", "value"]);
        t.push(["a", "1"]);
        t.rows.push(vec![Some("b".into()), None]);
        let mut out = BytesMut::new();
        write_table(&mut out, &t, "SHOW");
        let mut seen = Vec::new();
        while let Some(m) = Backend::parse(&mut out).unwrap() {
            seen.push(match m {
                Backend::RowDescription(rd) => {
                    use fallible_iterator::FallibleIterator;
                    let names: Vec<String> = rd
                        .fields()
                        .map(|f| Ok(format!("{}:{}", f.name(), f.type_oid())))
                        .collect()
                        .unwrap();
                    format!("T {}", names.join(","))
                }
                Backend::DataRow(dr) => {
                    use fallible_iterator::FallibleIterator;
                    let buf = dr.buffer();
                    let vals: Vec<String> = dr
                        .ranges()
                        .map(|r| {
                            Ok(r.map_or("NULL".into(), |r| {
                                String::from_utf8_lossy(&buf[r]).into_owned()
                            }))
                        })
                        .collect()
                        .unwrap();
                    format!("D {}", vals.join(","))
                }
                Backend::CommandComplete(c) => format!("C {}", c.tag().unwrap()),
                _ => "other".into(),
            });
        }
        assert_eq!(seen, ["T name:25,value:25", "D a,1", "D b,NULL", "C SHOW"]);
    }
}
