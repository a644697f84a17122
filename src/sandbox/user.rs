//! The image config's `User` (or `--user`), resolved as Docker and runc
//! resolve it: through the image's own `/etc/passwd` and `/etc/group`, never
//! the host's. Forms: `""` (root), `uid`, `name`, `uid:gid`, `name:group`,
//! `uid:group`, `name:gid`. A numeric uid need not exist in `/etc/passwd`
//! (its group is then 0); a name must. Supplementary groups are the groups
//! of `/etc/group` that list the user by name.

/// Who the process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// From `/etc/passwd`, for `HOME` when the image's env has none.
    pub home: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("user {name:?} is not in the image's /etc/passwd")]
    NoSuchUser { name: String },
    #[error("group {name:?} is not in the image's /etc/group")]
    NoSuchGroup { name: String },
    #[error("user {spec:?} is malformed (expected uid, name, uid:gid or name:group)")]
    Malformed { spec: String },
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = Passwd<'_>> {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(Passwd {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

/// `(name, gid, members)`.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || l.starts_with('#') {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `spec` against the image's `passwd` and `group` contents
/// (empty strings when the image has no such file).
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, UserError> {
    let spec = spec.trim();
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if (user.is_empty() && grp.is_some()) || grp.is_some_and(str::is_empty) {
        return Err(UserError::Malformed {
            spec: spec.to_string(),
        });
    }
    let user = if user.is_empty() { "0" } else { user };
    let (uid, mut gid, name, home) = match user.parse::<u32>() {
        Ok(uid) => match passwd_entries(passwd).find(|p| p.uid == uid) {
            Some(p) => (
                uid,
                p.gid,
                Some(p.name.to_string()),
                Some(p.home.to_string()),
            ),
            None => (uid, 0, None, None),
        },
        Err(_) => {
            let p = passwd_entries(passwd)
                .find(|p| p.name == user)
                .ok_or_else(|| UserError::NoSuchUser {
                    name: user.to_string(),
                })?;
            (
                p.uid,
                p.gid,
                Some(p.name.to_string()),
                Some(p.home.to_string()),
            )
        }
    };
    if let Some(g) = grp {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(group)
                .find(|(n, _, _)| *n == g)
                .map(|(_, id, _)| id)
                .ok_or_else(|| UserError::NoSuchGroup {
                    name: g.to_string(),
                })?,
        };
    }
    let mut additional_gids: Vec<u32> = match &name {
        Some(n) => group_entries(group)
            .filter(|(_, id, members)| members.contains(&n.as_str()) && *id != gid)
            .map(|(_, id, _)| id)
            .collect(),
        None => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: home.filter(|h| !h.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app,other\napp:x:1000:\nwww:x:33:app\n";

    fn r(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve(spec, PASSWD, GROUP)
    }

    #[test]
    fn empty_is_root() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.home.as_deref(), Some("/root"));
    }

    #[test]
    fn names_resolve_through_the_image_files() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![33, 50]);
        assert_eq!(u.home.as_deref(), Some("/home/app"));
        let u = r("app:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.additional_gids, vec![33]);
    }

    #[test]
    fn numbers_need_no_entry() {
        let u = r("1000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert!(u.additional_gids.is_empty());
        let u = r("4242:7").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 7));
        let u = r("1:www").unwrap();
        assert_eq!((u.uid, u.gid), (1, 33));
        let u = r("daemon:9").unwrap();
        assert_eq!((u.uid, u.gid), (1, 9));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            r("nobody").unwrap_err(),
            UserError::NoSuchUser {
                name: "nobody".into()
            }
        );
        assert_eq!(
            r("app:wheel").unwrap_err(),
            UserError::NoSuchGroup {
                name: "wheel".into()
            }
        );
        assert!(matches!(r(":5"), Err(UserError::Malformed { .. })));
        assert!(matches!(r("app:"), Err(UserError::Malformed { .. })));
        // No files at all: only numbers work.
        assert_eq!(resolve("33:33", "", "").unwrap().uid, 33);
        assert!(resolve("www", "", "").is_err());
    }
}
