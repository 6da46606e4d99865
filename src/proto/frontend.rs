//! The client messages the pooler must look inside: password, Query and the extended-protocol names.

use super::ProtoError;
use super::frame::cstr;

/// The password bytes of a PasswordMessage body (kept as bytes: never decode a secret lossily).
pub fn password(body: &[u8]) -> Result<&[u8], ProtoError> {
    cstr(body)
        .map(|(p, _)| p)
        .ok_or(ProtoError::Malformed("password"))
}

/// SQL text of a Query body.
pub fn query(body: &[u8]) -> Result<&[u8], ProtoError> {
    cstr(body)
        .map(|(q, _)| q)
        .ok_or(ProtoError::Malformed("Query"))
}

/// Statement name and SQL text of a Parse body.
pub fn parse(body: &[u8]) -> Result<(&[u8], &[u8]), ProtoError> {
    let (name, rest) = cstr(body).ok_or(ProtoError::Malformed("Parse"))?;
    let (sql, _) = cstr(rest).ok_or(ProtoError::Malformed("Parse"))?;
    Ok((name, sql))
}

/// Portal and statement names of a Bind body.
pub fn bind(body: &[u8]) -> Result<(&[u8], &[u8]), ProtoError> {
    let (portal, rest) = cstr(body).ok_or(ProtoError::Malformed("Bind"))?;
    let (stmt, _) = cstr(rest).ok_or(ProtoError::Malformed("Bind"))?;
    Ok((portal, stmt))
}

/// Kind (`S` statement or `P` portal) and name of a Describe or Close body.
pub fn target(body: &[u8]) -> Result<(u8, &[u8]), ProtoError> {
    let (&kind, rest) = body
        .split_first()
        .ok_or(ProtoError::Malformed("Describe/Close"))?;
    let (name, _) = cstr(rest).ok_or(ProtoError::Malformed("Describe/Close"))?;
    if kind != b'S' && kind != b'P' {
        return Err(ProtoError::Malformed("Describe/Close"));
    }
    Ok((kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names() {
        assert_eq!(
            parse(b"s1\0select 1\0\0\0").unwrap(),
            (&b"s1"[..], &b"select 1"[..])
        );
        assert_eq!(bind(b"\0s1\0\0\0").unwrap(), (&b""[..], &b"s1"[..]));
        assert_eq!(target(b"Ss1\0").unwrap(), (b'S', &b"s1"[..]));
        assert!(target(b"Xs1\0").is_err());
        assert!(parse(b"s1").is_err());
        assert_eq!(password(b"secret\0").unwrap(), b"secret");
    }
}
