//! Connection URLs without their passwords, for error messages and logs.

/// `url` with the password of its user info replaced by `***`; anything that is not a
/// `scheme://` URL is shown as `<not a URL>` (it might be a password pasted by mistake).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{hosts}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_passwords_only() {
        assert_eq!(
            redact("mongodb://app:s3cret@db1:27017,db2/shop?replicaSet=rs0"),
            "mongodb://app:***@db1:27017,db2/shop?replicaSet=rs0"
        );
        assert_eq!(
            redact("mongodb://127.0.0.1:27017/?replicaSet=secantus"),
            "mongodb://127.0.0.1:27017/?replicaSet=secantus"
        );
        assert_eq!(
            redact("redis://:pw@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact("garbage"), "<not a URL>");
    }
}
