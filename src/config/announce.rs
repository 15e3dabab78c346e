//! The `[announce]` table of `anytund.toml`: the routing daemon (BIRD 2)
//! that announces the anycast prefixes while this proxy is healthy.
//!
//! ```toml
//! [announce]
//! bird_config = "bird.conf"              # the proxy's BIRD config (docs/bird/proxy.conf)
//! bird_socket = "bird.ctl"               # its control socket
//! protocols = ["anycast4", "anycast6"]   # static protocols enabled while healthy
//! bird = "bird"                          # the BIRD 2 daemon (found on PATH)
//! birdc = "birdc"                        # its control client
//! ```
//!
//! With the table, `anytund` runs `bird` as its own child (killed by the
//! kernel when `anytund` dies, even by SIGKILL) and enables the named
//! protocols with `birdc` only while it is ready (docs/anycast-lab.md).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// How `anytund` drives its routing daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// The BIRD 2 daemon binary (`bird`, looked up on `PATH` if bare).
    pub bird: PathBuf,
    /// The control client (`birdc`).
    pub birdc: PathBuf,
    /// The BIRD config file `anytund` starts BIRD with.
    pub bird_config: PathBuf,
    /// BIRD's control socket (`bird -s`, `birdc -s`).
    pub bird_socket: PathBuf,
    /// Static protocols holding the anycast routes: disabled in the BIRD
    /// config, enabled while the proxy is ready and not drained.
    pub protocols: Vec<String>,
}

/// Checks one name of `protocols` (or the C ABI's `announce_protocols`):
/// a BIRD protocol name, and not `all`, which `birdc disable all` would
/// take for every protocol, BGP sessions included. Errors say why, naming
/// it.
pub fn check_protocol(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("{name:?} is not a BIRD protocol name"));
    }
    if name.eq_ignore_ascii_case("all") {
        return Err(format!(
            "{name:?} names every BIRD protocol (birdc disable all would drop the BGP \
             sessions too): name the static protocols of the anycast routes"
        ));
    }
    Ok(())
}

/// The table as written; types are checked by serde (errors carry their
/// line and column through [`super::parse`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [announce] table")]
pub(super) struct RawAnnounce {
    bird: Option<Spanned<String>>,
    birdc: Option<Spanned<String>>,
    bird_config: Option<Spanned<String>>,
    bird_socket: Option<Spanned<String>>,
    protocols: Option<Spanned<Vec<String>>>,
}

impl RawAnnounce {
    /// Checks the table; relative paths are relative to `origin`'s folder.
    /// Returns `(message, span)` for the first problem.
    pub(super) fn check(
        self,
        origin: &Path,
    ) -> Result<AnnounceConfig, (String, std::ops::Range<usize>)> {
        let dir = origin.parent().unwrap_or(Path::new("/"));
        let path = |key: &str, v: Option<Spanned<String>>| -> Result<Option<PathBuf>, _> {
            match v {
                None => Ok(None),
                Some(s) if s.get_ref().is_empty() => {
                    Err((format!("invalid value for {key}: path is empty"), s.span()))
                }
                Some(s) => {
                    let p = PathBuf::from(s.into_inner());
                    Ok(Some(if p.is_relative() { dir.join(p) } else { p }))
                }
            }
        };
        // A bare program name is looked up on PATH, not made relative.
        let program = |v: Option<Spanned<String>>, default: &str| match v {
            Some(s) if s.get_ref().contains('/') => path("program", Some(s)),
            Some(s) => Ok(Some(PathBuf::from(s.into_inner()))),
            None => Ok(Some(PathBuf::from(default))),
        };
        let bird_config = path("bird_config", self.bird_config)?
            .ok_or_else(|| ("[announce] needs bird_config".to_owned(), 0..0))?;
        let bird_socket = path("bird_socket", self.bird_socket)?
            .unwrap_or_else(|| bird_config.with_extension("ctl"));
        let protocols = match self.protocols {
            Some(p) if p.get_ref().is_empty() => {
                return Err((
                    "invalid value for protocols: name at least one static protocol".into(),
                    p.span(),
                ))
            }
            Some(p) => p.into_inner(),
            None => vec!["anycast4".into(), "anycast6".into()],
        };
        if let Some(why) = protocols.iter().find_map(|p| check_protocol(p).err()) {
            return Err((format!("invalid value for protocols: {why}"), 0..0));
        }
        Ok(AnnounceConfig {
            bird: program(self.bird, "bird")?.expect("default"),
            birdc: program(self.birdc, "birdc")?.expect("default"),
            bird_config,
            bird_socket,
            protocols,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ConfigError};
    use std::path::{Path, PathBuf};

    fn origin() -> &'static Path {
        Path::new("/etc/anytun/anytund.toml")
    }

    #[test]
    fn announce_defaults_and_relative_paths() {
        let c = parse("[announce]\nbird_config = \"bird.conf\"\n", origin()).unwrap();
        let a = c.announce.unwrap();
        assert_eq!(a.bird_config, PathBuf::from("/etc/anytun/bird.conf"));
        assert_eq!(a.bird_socket, PathBuf::from("/etc/anytun/bird.ctl"));
        assert_eq!(a.protocols, ["anycast4", "anycast6"]);
        assert_eq!(a.bird, PathBuf::from("bird"));
        assert_eq!(a.birdc, PathBuf::from("birdc"));
        assert!(parse("", origin()).unwrap().announce.is_none());
    }

    #[test]
    fn announce_refuses_what_bird_could_not_take() {
        for (text, says) in [
            ("[announce]\nbird_socket = \"x\"\n", "needs bird_config"),
            (
                "[announce]\nbird_config = \"b\"\nprotocols = []\n",
                "at least one",
            ),
            (
                "[announce]\nbird_config = \"b\"\nprotocols = [\"any; cast\"]\n",
                "not a BIRD protocol name",
            ),
            (
                "[announce]\nbird_config = \"b\"\nprotocols = [\"anycast4\", \"all\"]\n",
                "names every BIRD protocol",
            ),
            (
                "[announce]\nbird_config = \"b\"\nprotocols = [\"ALL\"]\n",
                "names every BIRD protocol",
            ),
            ("[announce]\nbird_config = \"\"\n", "path is empty"),
            (
                "[announce]\nbird_config = \"b\"\ncolour = 1\n",
                "unknown field",
            ),
        ] {
            match parse(text, origin()) {
                Err(ConfigError::Invalid { message, .. }) => {
                    assert!(message.contains(says), "{text:?}: {message}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
