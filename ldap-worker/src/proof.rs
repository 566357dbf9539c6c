//! How a job's user is known to be who they say: a password for the worker
//! to bind with, or the caller's word (a signed token it has checked).

/// How the user is known to be who they say.
pub enum Proof {
    /// Their password: the worker binds as the user with it.
    Password(String),
    /// The caller has verified the user itself (a signed token naming
    /// them): no bind as the user; the membership searches run on an
    /// anonymous connection, so a directory that refuses anonymous
    /// searches finds no groups (grants nothing).
    Vouched,
}
