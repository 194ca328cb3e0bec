//! Secrets (passwords, passphrases, tokens): where each comes from, an environment variable
//! or a file, and reading it only when it is needed. A leaf module, one rule for every
//! secret the job uses.
//!
//! Guarantees: a secret's value is held as a [`SecretString`] (never printed by `Debug`);
//! errors name the variable or file and the configuration key, never the value. A secret
//! file's one trailing line break (`\n` or `\r\n`, as `echo` or an editor leaves it) is not
//! part of the secret; anything else is. An empty secret is an error.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use secrecy::SecretString;

/// Where a secret comes from, and the configuration key that names it (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Secret {
    from: From,
    key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum From {
    Env(String),
    File(PathBuf),
}

impl Secret {
    /// The secret in the environment variable `var`, named by the configuration key `key`.
    pub(crate) fn env(key: &str, var: &str) -> Secret {
        Secret {
            from: From::Env(var.to_string()),
            key: key.to_string(),
        }
    }

    /// The secret in the file at `path`, named by the configuration key `key`.
    pub(crate) fn file(key: &str, path: PathBuf) -> Secret {
        Secret {
            from: From::File(path),
            key: key.to_string(),
        }
    }

    /// Reads the secret now.
    pub(crate) fn read(&self) -> Result<SecretString> {
        let value = match &self.from {
            From::Env(var) => std::env::var(var).map_err(|_| {
                anyhow::anyhow!(
                    "the environment variable {var} is not set (or not UTF-8); `{}` names it",
                    self.key
                )
            })?,
            From::File(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "cannot read the secret file {} (`{}`)",
                        path.display(),
                        self.key
                    )
                })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                text.strip_suffix('\r').unwrap_or(text).to_string()
            }
        };
        if value.is_empty() {
            bail!("{} is empty", self.describe());
        }
        Ok(SecretString::from(value))
    }

    /// Where the secret comes from, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.from {
            From::Env(var) => format!("the environment variable {var}"),
            From::File(path) => format!("the secret file {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_secret_files_one_line_break_is_dropped_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw", "pw"),
            ("pw \n\n", "pw \n"),
            (" pw\t", " pw\t"),
        ] {
            let path = dir.path().join("secret");
            std::fs::write(&path, text).unwrap();
            let got = Secret::file("password_file", path).read().unwrap();
            assert_eq!(got.expose_secret(), want, "{text:?}");
        }
    }

    #[test]
    fn errors_name_the_source_and_the_key_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, "\n").unwrap();
        let e = Secret::file("password_file", path.clone())
            .read()
            .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!("the secret file {} is empty", path.display())
        );
        let e = Secret::file("password_file", dir.path().join("none"))
            .read()
            .unwrap_err();
        assert!(format!("{e:#}").contains("(`password_file`)"), "{e:#}");
        let e = Secret::env("password_env", "TANGOE_INGEST_NO_SUCH_VAR")
            .read()
            .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "the environment variable TANGOE_INGEST_NO_SUCH_VAR is not set (or not UTF-8); \
             `password_env` names it"
        );
    }
}
