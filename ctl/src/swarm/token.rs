//! Join tokens, in Docker's format: `SWMTKN-1-<50 characters>-<25 characters>`, both
//! parts lowercase base 36. Docker's first part is a digest of the swarm's root CA, the
//! second a secret per role. tapnet has no CA yet (the encryption issue brings TLS): its
//! first part is the swarm's id, the second a random secret per role. A manager accepts
//! a join only with a token it issued; the token names the role.

const PREFIX: &str = "SWMTKN-1-";
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `n` random base-36 characters.
pub fn random_base36(n: usize) -> String {
    (0..n)
        .map(|_| ALPHABET[rand::random_range(0..36usize)] as char)
        .collect()
}

/// A fresh token of swarm `cluster_id` (50 base-36 characters).
pub fn new_token(cluster_id: &str) -> String {
    format!("{PREFIX}{cluster_id}-{}", random_base36(25))
}

/// Whether `token` has the token's form (Docker's "invalid join token" otherwise).
pub fn well_formed(token: &str) -> bool {
    let Some(rest) = token.strip_prefix(PREFIX) else {
        return false;
    };
    let Some((ca, secret)) = rest.split_once('-') else {
        return false;
    };
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
    ok(ca, 50) && ok(secret, 25)
}

/// Compare two credentials in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_dockers_form() {
        let id = random_base36(50);
        let t = new_token(&id);
        assert!(well_formed(&t), "{t}");
        assert_eq!(t.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
        assert!(!well_formed("SWMTKN-1-abc-def"));
        assert!(!well_formed(&t.replace("SWMTKN-1-", "SWMTKN-2-")));
        assert!(!well_formed(&format!("{t}x")));
        assert_ne!(new_token(&id), new_token(&id));
        assert!(same(&t, &t.clone()));
        assert!(!same(&t, &new_token(&id)));
    }
}
