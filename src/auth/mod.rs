//! Authentication: the easy-scrypt password hash and the tenant directory.

pub mod hash;
