//! Tenant identity from startup parameters (user, database, schema_search_path, options...).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // NUL-separated name/value pairs, as a StartupMessage carries them.
    let fields: Vec<String> = data
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let params: Vec<(String, String)> = fields
        .chunks(2)
        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
        .collect();
    if let Ok(id) = perseus::session::tenant::identify(&params) {
        assert!(!id.user.is_empty() && !id.database.is_empty() && !id.schema.is_empty());
    }
});
