//! The ACL file loader: no YAML text makes it panic, nor does
//! authenticating any user of what it loaded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pubsubd::acl::Acl;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(acl) = Acl::parse(text) {
        let _ = acl.len();
        for user in ["alice", "bob", "", "root"] {
            let _ = acl.authenticate(user, "s3cret");
            let _ = acl.authenticate(user, "");
        }
    }
});
