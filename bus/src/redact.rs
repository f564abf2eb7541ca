//! Connection URLs without their passwords, for error messages and logs.

/// The user info of a `scheme://` URL: `(user, Some(password))` for `user:password@`,
/// `(token, None)` for a lone `token@` (how NATS URLs carry a token).
pub fn userinfo(url: &str) -> Option<(&str, Option<&str>)> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let (info, _) = authority.rsplit_once('@')?;
    Some(match info.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (info, None),
    })
}

/// `url` with the secret of its user info replaced by `***` (the password of
/// `user:password@`, the whole of a lone `token@`); anything that is not a `scheme://`
/// URL is shown as `<not a URL>` (it might be a password pasted by mistake).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((_, hosts)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo(url) {
        Some((user, Some(_))) => format!("{scheme}://{user}:***@{hosts}{tail}"),
        _ => format!("{scheme}://***@{hosts}{tail}"),
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
        // A NATS token in the user info is all secret.
        assert_eq!(
            redact("nats://s3cret-token@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
    }
}
