//! Splits an auth-DB DSN (URL or `key=value` form) into its parameters without decoding what is
//! only passed along, so pgxpool's extra parameters can be taken out and the rest kept byte for byte.

use std::borrow::Cow;

/// One connection parameter: decoded key and value, and its raw text in the DSN.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub key: String,
    pub value: String,
    pub raw: String,
}

/// A DSN cut into the part before the parameters and the parameters themselves.
#[derive(Debug, Clone)]
pub(crate) struct Split {
    /// URL form: `postgres://user:pass@host/db`; keyword form: empty.
    pub head: String,
    pub url: bool,
    pub params: Vec<Param>,
}

impl Split {
    /// Reassembles a DSN from the head and the given raw parameter texts.
    pub(crate) fn join<'a>(&self, raws: impl IntoIterator<Item = &'a str>) -> String {
        let raws: Vec<&str> = raws.into_iter().collect();
        if self.url {
            if raws.is_empty() {
                self.head.clone()
            } else {
                format!("{}?{}", self.head, raws.join("&"))
            }
        } else {
            raws.join(" ")
        }
    }
}

const URL_PREFIXES: [&str; 2] = ["postgres://", "postgresql://"];

pub(crate) fn is_url(dsn: &str) -> bool {
    URL_PREFIXES.iter().any(|p| dsn.starts_with(p))
}

/// Splits a DSN. Error texts never quote the DSN, which may hold a password.
pub(crate) fn split(dsn: &str) -> Result<Split, String> {
    if is_url(dsn) {
        split_url(dsn)
    } else {
        split_keywords(dsn)
    }
}

fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| "a percent-encoded part is not valid UTF-8".to_string())
}

/// Mirrors tokio-postgres's reading: credentials run to the first `@`, parameters follow the
/// first `?` after them (a password may itself contain `?`).
fn split_url(dsn: &str) -> Result<Split, String> {
    let after_scheme = dsn.find("://").map(|i| i + 3).unwrap_or(0);
    let creds_end = dsn[after_scheme..]
        .find('@')
        .map(|i| after_scheme + i + 1)
        .unwrap_or(after_scheme);
    let Some(q) = dsn[creds_end..].find('?').map(|i| creds_end + i) else {
        return Ok(Split {
            head: dsn.to_string(),
            url: true,
            params: Vec::new(),
        });
    };
    let mut params = Vec::new();
    for raw in dsn[q + 1..].split('&') {
        let (k, v) = raw
            .split_once('=')
            .ok_or_else(|| "a URL parameter lacks `=`".to_string())?;
        params.push(Param {
            key: decode(k)?,
            value: decode(v)?,
            raw: raw.to_string(),
        });
    }
    Ok(Split {
        head: dsn[..q].to_string(),
        url: true,
        params,
    })
}

/// `host=db port=5432 password='a b\'c'`, read as libpq and tokio-postgres read it.
fn split_keywords(dsn: &str) -> Result<Split, String> {
    let chars: Vec<(usize, char)> = dsn.char_indices().collect();
    let end = dsn.len();
    let at = |i: usize| chars.get(i).map(|&(b, _)| b).unwrap_or(end);
    let mut i = 0;
    let mut params = Vec::new();
    loop {
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        let start = i;
        while i < chars.len() && !chars[i].1.is_whitespace() && chars[i].1 != '=' {
            i += 1;
        }
        if i == start {
            if i < chars.len() {
                return Err("a parameter has no name before `=`".into());
            }
            break;
        }
        let key = dsn[at(start)..at(i)].to_string();
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        if chars.get(i).map(|c| c.1) != Some('=') {
            return Err(format!("parameter `{key}` is not followed by `=`"));
        }
        i += 1;
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if chars.get(i).map(|c| c.1) == Some('\'') {
            i += 1;
            loop {
                match chars.get(i).map(|c| c.1) {
                    None => return Err(format!("the quoted value of `{key}` is not closed")),
                    Some('\'') => break,
                    Some('\\') => {
                        value.extend(chars.get(i + 1).map(|c| c.1));
                        i += 2;
                    }
                    Some(c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            i += 1;
        } else {
            while let Some(&(_, c)) = chars.get(i) {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    value.extend(chars.get(i + 1).map(|c| c.1));
                    i += 2;
                } else {
                    value.push(c);
                    i += 1;
                }
            }
            if value.is_empty() {
                return Err(format!("parameter `{key}` has no value"));
            }
        }
        let raw = dsn[at(start)..at(i.min(chars.len()))].to_string();
        params.push(Param { key, value, raw });
    }
    Ok(Split {
        head: String::new(),
        url: false,
        params,
    })
}

/// Quotes a value for the keyword form.
pub(crate) fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_params_keep_raw_text() {
        let s = split("postgres://u:p%3F@h:1/db?sslmode=disable&pool_max_conns=7").unwrap();
        assert_eq!(s.head, "postgres://u:p%3F@h:1/db");
        assert_eq!(s.params.len(), 2);
        assert_eq!(
            (s.params[1].key.as_str(), s.params[1].value.as_str()),
            ("pool_max_conns", "7")
        );
        assert_eq!(
            s.join([s.params[0].raw.as_str()]),
            "postgres://u:p%3F@h:1/db?sslmode=disable"
        );
    }

    #[test]
    fn url_password_may_hold_question_mark() {
        let s = split("postgres://u:a?b@h/db").unwrap();
        assert!(s.params.is_empty());
        assert_eq!(s.head, "postgres://u:a?b@h/db");
    }

    #[test]
    fn keyword_form_with_quotes_and_escapes() {
        let s = split("host=h  password = 'a b\\'c' pool_min_conns=2 dbname=x\\ y").unwrap();
        let kv: Vec<(&str, &str)> = s
            .params
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            kv,
            [
                ("host", "h"),
                ("password", "a b'c"),
                ("pool_min_conns", "2"),
                ("dbname", "x y")
            ]
        );
        assert_eq!(s.params[1].raw, "password = 'a b\\'c'");
        assert_eq!(quote("a b'c\\"), "'a b\\'c\\\\'");
    }

    #[test]
    fn keyword_form_errors_do_not_quote_values() {
        assert!(split("host").unwrap_err().contains("`host`"));
        assert!(
            split("password='secret")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(!split("password='secret").unwrap_err().contains("secret"));
        assert!(split("host=").unwrap_err().contains("no value"));
    }
}
