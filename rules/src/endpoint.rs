//! Endpoint names for per-endpoint results and response diffs: the method and the path
//! with its variable segments (numbers, UUIDs, hex ids) as `{id}` and without the query,
//! so that `GET /api/orders/17?x=1` and `GET /api/orders/18` are one endpoint.

/// The name under which results count once a worker or a status has named as many
/// endpoints as it keeps apart.
pub const OTHER: &str = "other";

/// `"METHOD /normalised/path"`.
pub fn endpoint(method: &str, path_and_query: &str) -> String {
    let mut name = String::new();
    write_endpoint(&mut name, method, path_and_query);
    name
}

/// [`endpoint`] into `name` (cleared first): a dispatch thread reuses one buffer
/// instead of allocating a name per record.
pub fn write_endpoint(name: &mut String, method: &str, path_and_query: &str) {
    name.clear();
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    // An absolute-form target (`http://host/x`): its path only.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => path,
    };
    name.push_str(method);
    name.push(' ');
    if path.is_empty() || !path.starts_with('/') {
        name.push('/');
    }
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            name.push('/');
        }
        name.push_str(if is_id(segment) { "{id}" } else { segment });
    }
}

/// Whether a path segment names one item rather than a kind of thing: a number, a UUID,
/// or a hex string of 8 or more characters with a digit in it (so `deadbeef` words stay).
fn is_id(segment: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid =
        segment.len() == 36 && segment.split('-').map(str::len).eq([8, 4, 4, 4, 12]) && segment.split('-').all(hex);
    let number = !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit());
    let hex_id = segment.len() >= 8 && hex(segment) && segment.bytes().any(|b| b.is_ascii_digit());
    number || uuid || hex_id
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn variable_segments_become_id_and_the_query_goes() {
        assert_eq!(endpoint("GET", "/api/orders/17?x=1"), "GET /api/orders/{id}");
        assert_eq!(endpoint("POST", "/api/orders"), "POST /api/orders");
        assert_eq!(
            endpoint("GET", "/u/3f2b8c1e-9a4d-4e5f-8a6b-0c1d2e3f4a5b/files/5f2b9c1a77"),
            "GET /u/{id}/files/{id}"
        );
        assert_eq!(endpoint("GET", "/v2/deadbeef/cafe/a1"), "GET /v2/deadbeef/cafe/a1", "words and short ids stay");
        assert_eq!(endpoint("GET", "/"), "GET /");
        assert_eq!(endpoint("GET", ""), "GET /");
        assert_eq!(endpoint("GET", "/a/"), "GET /a/");
        assert_eq!(endpoint("GET", "http://shop.example/items/9?y"), "GET /items/{id}");
        assert_eq!(endpoint("OPTIONS", "*"), "OPTIONS /*");
    }
}
