//! AWS Signature Version 4 (HMAC-SHA256) for the SQS JSON protocol, and
//! the `X-Amz-Date` format. Pure functions, checked against AWS's vectors.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// What SigV4 signs of a request.
pub struct SignRequest<'a> {
    pub method: &'a str,
    /// The canonical (already URI-encoded) path.
    pub path: &'a str,
    /// The canonical query string (sorted, encoded), or "".
    pub query: &'a str,
    /// Every header to sign, `host` and `x-amz-date` included.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: &'a [u8],
}

/// The `Authorization` header value for `req`, signed at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`) for `region` and `service`.
pub fn authorization(
    req: &SignRequest<'_>,
    access_key: &str,
    secret_key: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), collapse_spaces(v)))
        .collect();
    headers.sort();
    let mut canonical_headers = String::new();
    let mut signed_headers = String::new();
    let mut i = 0;
    while i < headers.len() {
        // Repeated headers: one line, values joined by commas.
        let name = headers[i].0.clone();
        let mut values = Vec::new();
        while i < headers.len() && headers[i].0 == name {
            values.push(headers[i].1.as_str());
            i += 1;
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
        if !signed_headers.is_empty() {
            signed_headers.push(';');
        }
        signed_headers.push_str(&name);
    }
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        req.query,
        canonical_headers,
        signed_headers,
        hex(&Sha256::digest(req.payload))
    );
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, \
         SignedHeaders={signed_headers}, Signature={signature}"
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Trims and collapses runs of spaces, as SigV4's canonical headers want.
fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (UTC).
pub fn amz_date(epoch_secs: u64) -> String {
    let days = (epoch_secs / 86_400) as i64;
    let secs = epoch_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn sign(method: &str, query: &str, headers: &[(&str, &str)], payload: &[u8]) -> String {
        authorization(
            &SignRequest {
                method,
                path: "/",
                query,
                headers,
                payload,
            },
            AKID,
            SECRET,
            "us-east-1",
            "service",
            DATE,
        )
    }

    // Vectors from AWS's Signature Version 4 test suite.
    #[test]
    fn sigv4_get_vanilla() {
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)];
        assert_eq!(
            sign("GET", "", &headers, b""),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn sigv4_post_vanilla_and_query() {
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)];
        assert!(sign("POST", "", &headers, b"").ends_with(
            "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ));
        // get-vanilla-query-order-key-case (canonical query given sorted).
        assert!(
            sign("GET", "Param1=value1&Param2=value2", &headers, b"").ends_with(
                "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
    }

    #[test]
    fn sigv4_post_with_body() {
        // post-x-www-form-urlencoded: a signed content-type and a body hash.
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", DATE),
        ];
        assert_eq!(
            sign("POST", "", &headers, b"Param1=value1"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn sigv4_header_trim() {
        // header-value-trim: values trimmed, inner runs of spaces collapsed.
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("My-Header1", " value1"),
            ("My-Header2", " \"a   b   c\""),
            ("X-Amz-Date", DATE),
        ];
        assert!(sign("GET", "", &headers, b"").ends_with(
            "SignedHeaders=host;my-header1;my-header2;x-amz-date, \
             Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
        ));
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(1_440_938_160), DATE);
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(4_102_444_799), "20991231T235959Z");
    }
}
