//! API keys: where the CLI finds them, and where `flash login` saves them.
//!
//! # Lookup
//!
//! For RunPod, as runpod-flash does: `RUNPOD_API_KEY`, then `RUNPOD_API_KEY` of the
//! nearest `.env` from the working directory up (the nearest file decides, as
//! `load_dotenv(find_dotenv())` does), then `~/.runpod/config.toml`: `[default].api_key`, or
//! runpodctl's top-level `apikey` when the file has no `[default]`.
//!
//! For a `flash server`: `RUNPOD_API_KEY`, then that server's `<data dir>/api_key`. A RunPod
//! key from `.env` or `config.toml` is never sent to a local server, and a local key never
//! to RunPod.
//!
//! Every key comes with its [`KeySource`], which names the variable or the file, so that a
//! rejected key can be traced.
//!
//! # Saving (`flash login`)
//!
//! A RunPod key goes to `~/.runpod/config.toml` `[default].api_key`. The file is edited with
//! `toml_edit`, so everything else in it (runpodctl's `apikey`/`apiurl`, other profiles,
//! comments, layout) stays as it was, as runpod-flash keeps it with tomlkit. Unlike
//! runpod-flash, the file is replaced atomically and is `0600` from its first byte (the
//! temporary file is created private, then renamed), so no other user can read the key in
//! between; a file that is not valid TOML is kept as a backup rather than dropped; and a
//! symlinked `config.toml` (dotfiles) is written through the link.
//!
//! A `flash server`'s key goes where the lookup reads it, `<data dir>/api_key`, never into
//! RunPod's file (it would replace the user's RunPod key and would never be read for a
//! local server); a different key already there is not replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use flash_api::{API_KEY_ENV, KeySource};
use flash_manifest::atomic::{self, Visibility};

use crate::connect::Target;

/// RunPod's credentials file under `home`.
pub fn runpod_config_path(home: &Path) -> PathBuf {
    home.join(".runpod").join("config.toml")
}

/// Where keys are looked up (the process env, the working directory, the home directory,
/// the local server's data dir); tests pass their own.
pub struct KeyLookup<'a> {
    /// `RUNPOD_API_KEY` of the process.
    pub env_key: Option<String>,
    pub cwd: &'a Path,
    pub home: Option<&'a Path>,
    /// The local `flash server`'s data dir (`FLASH_HOME`, else `~/.flash`).
    pub local_data_dir: Option<&'a Path>,
}

impl KeyLookup<'_> {
    /// The API key for `target` and where it came from.
    pub fn find(&self, target: &Target) -> Result<(String, KeySource)> {
        if let Some(key) = self
            .env_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            return Ok((key.to_string(), KeySource::Env));
        }
        match target {
            Target::RunPod { .. } => {
                if let Some(found) = dot_env_key(self.cwd)? {
                    return Ok(found);
                }
                if let Some(home) = self.home
                    && let Some(found) = config_toml_key(&runpod_config_path(home))?
                {
                    return Ok(found);
                }
                bail!(
                    "no RunPod API key: run `flash login --server runpod` (it saves one in \
                     ~/.runpod/config.toml), or set {API_KEY_ENV} in the environment or in a \
                     .env file; keys are also at https://console.runpod.io/user/settings"
                )
            }
            Target::Local { .. } => {
                let Some(dir) = self.local_data_dir else {
                    bail!("no API key: set {API_KEY_ENV}, or set FLASH_HOME or HOME");
                };
                local_key(&flash_control::auth::api_key_path(dir))
            }
        }
    }
}

/// `RUNPOD_API_KEY` of the nearest `.env` from `cwd` up.
fn dot_env_key(cwd: &Path) -> Result<Option<(String, KeySource)>> {
    let Some(path) = cwd
        .ancestors()
        .map(|dir| dir.join(".env"))
        .find(|path| path.is_file())
    else {
        return Ok(None);
    };
    let entries =
        dotenvy::from_path_iter(&path).with_context(|| format!("reading {}", path.display()))?;
    for entry in entries {
        let (key, value) = entry.with_context(|| {
            format!(
                "{} is not a valid .env file: fix or rename it",
                path.display()
            )
        })?;
        if key == API_KEY_ENV && !value.trim().is_empty() {
            return Ok(Some((value.trim().to_string(), KeySource::DotEnv(path))));
        }
    }
    // The nearest .env decides, as load_dotenv(find_dotenv()) does.
    Ok(None)
}

/// `[default].api_key` of `~/.runpod/config.toml`, or runpodctl's top-level `apikey` when
/// the file has no `[default]`.
fn config_toml_key(path: &Path) -> Result<Option<(String, KeySource)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let doc: toml::Table = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not valid TOML: fix it, or run `flash login --server runpod` (it keeps the \
             broken file as a backup)",
            path.display()
        )
    })?;
    let key = match doc.get("default") {
        Some(default) => default.get("api_key"),
        None => doc.get("apikey"),
    };
    Ok(key
        .and_then(|k| k.as_str())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| (k.to_string(), KeySource::RunPodConfig(path.to_path_buf()))))
}

fn local_key(path: &Path) -> Result<(String, KeySource)> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            Ok((text.trim().to_string(), KeySource::File(path.to_path_buf())))
        }
        Ok(_) => Err(anyhow!(
            "the API key file {} is empty: restart `flash server` or set {API_KEY_ENV}",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(anyhow!(
            "no API key: set {API_KEY_ENV}, or start `flash server` (it writes {})",
            path.display()
        )),
        Err(e) => Err(e).with_context(|| format!("reading the API key from {}", path.display())),
    }
}

/// Where `flash login` put a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedKey {
    /// The file that holds the key now.
    pub path: PathBuf,
    /// The file already held this key; nothing was written.
    pub unchanged: bool,
    /// A previous `config.toml` that was not valid TOML, kept under this name.
    pub backup: Option<PathBuf>,
}

/// Saves `key` where the lookup finds it for `target`: `~/.runpod/config.toml` under
/// `home` for RunPod, `<data dir>/api_key` for a `flash server`.
pub fn save_key(
    target: &Target,
    key: &str,
    home: Option<&Path>,
    local_data_dir: Option<&Path>,
) -> Result<SavedKey> {
    match target {
        Target::RunPod { .. } => {
            let home = home.context(
                "HOME is not set, so there is no ~/.runpod/config.toml to save the key in: set \
                 HOME, or put the key in RUNPOD_API_KEY",
            )?;
            save_runpod_key(&runpod_config_path(home), key)
        }
        Target::Local { .. } => {
            let dir = local_data_dir.context(
                "neither FLASH_HOME nor HOME is set, so there is no data dir to save the key \
                 in: set FLASH_HOME, or put the key in RUNPOD_API_KEY",
            )?;
            save_local_key(&flash_control::auth::api_key_path(dir), key)
        }
    }
}

/// Sets `[default].api_key` of the TOML file at `path` to `key`, keeping everything else.
pub fn save_runpod_key(path: &Path, key: &str) -> Result<SavedKey> {
    // Write through a symlinked config.toml (dotfiles) instead of replacing the link.
    let path = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(path)
            .with_context(|| format!("{} is a broken symlink", path.display()))?,
        _ => path.to_path_buf(),
    };
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (updated, backup) = match upsert_default_api_key(&existing, key) {
        Ok(updated) => (updated, None),
        Err(_) => {
            // runpod-flash drops a file it cannot parse; keep it instead.
            let backup = backup_path(&path);
            std::fs::copy(&path, &backup).with_context(|| {
                format!(
                    "{} is not valid TOML and could not be kept as {}",
                    path.display(),
                    backup.display()
                )
            })?;
            let fresh = upsert_default_api_key("", key).expect("an empty document parses");
            (fresh, Some(backup))
        }
    };
    if updated == existing {
        return Ok(SavedKey {
            path,
            unchanged: true,
            backup,
        });
    }
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    atomic::write_with(&path, Visibility::Private, |file| {
        file.write_all(updated.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(SavedKey {
        path,
        unchanged: false,
        backup,
    })
}

/// `content` with `[default].api_key = key`; every other key, table, comment, the layout
/// and the line endings are kept. A missing (or non-table) `default` becomes a `[default]` table.
pub fn upsert_default_api_key(content: &str, key: &str) -> Result<String, toml_edit::TomlError> {
    let mut doc: toml_edit::DocumentMut = content.parse()?;
    match doc
        .get_mut("default")
        .and_then(toml_edit::Item::as_table_like_mut)
    {
        Some(default) => match default
            .get_mut("api_key")
            .and_then(toml_edit::Item::as_value_mut)
        {
            // Keep the value's surrounding whitespace and trailing comment.
            Some(value) => {
                let decor = value.decor().clone();
                *value = toml_edit::Value::from(key);
                *value.decor_mut() = decor;
            }
            None => {
                default.insert("api_key", toml_edit::value(key));
            }
        },
        None => {
            let mut table = toml_edit::Table::new();
            table.insert("api_key", toml_edit::value(key));
            doc.insert("default", toml_edit::Item::Table(table));
        }
    }
    let text = doc.to_string();
    // toml_edit ends the lines it writes with `\n`; keep a CRLF file CRLF throughout, as
    // runpod-flash (tomlkit) does.
    Ok(if content.contains("\r\n") {
        text.replace("\r\n", "\n").replace('\n', "\r\n")
    } else {
        text
    })
}

/// `config.toml.invalid`, or `config.toml.invalid.<n>` when that exists.
fn backup_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.toml".into());
    (0..)
        .map(|n| match n {
            0 => path.with_file_name(format!("{name}.invalid")),
            n => path.with_file_name(format!("{name}.invalid.{n}")),
        })
        .find(|p| !p.exists())
        .expect("an unused name")
}

/// Writes a `flash server`'s key to `path` (`<data dir>/api_key`), unless a different key
/// is there already.
pub fn save_local_key(path: &Path, key: &str) -> Result<SavedKey> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim() == key => {
            return Ok(SavedKey {
                path: path.to_path_buf(),
                unchanged: true,
                backup: None,
            });
        }
        Ok(text) if !text.trim().is_empty() => bail!(
            "{} already holds another key (the `flash server` of that data dir uses it), so the \
             new key was not saved: point FLASH_HOME at another directory and run `flash login` \
             again, or pass the key in {API_KEY_ENV}",
            path.display()
        ),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    atomic::write_with(path, Visibility::Private, |file| {
        file.write_all(key.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(SavedKey {
        path: path.to_path_buf(),
        unchanged: false,
        backup: None,
    })
}

/// Creates `dir` (and its parents) if missing; a new one is private (`0700`).
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runpod() -> Target {
        Target::parse("runpod", None).unwrap()
    }

    fn local() -> Target {
        Target::parse("local", None).unwrap()
    }

    #[test]
    fn runpod_keys_come_from_the_env_then_dot_env_then_config_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let project = tmp.path().join("work/app");
        std::fs::create_dir_all(home.join(".runpod")).unwrap();
        std::fs::create_dir_all(&project).unwrap();
        let config = runpod_config_path(&home);
        let lookup = |env_key: Option<&str>| KeyLookup {
            env_key: env_key.map(str::to_string),
            cwd: &project,
            home: Some(&home),
            local_data_dir: None,
        };
        let err = lookup(None).find(&runpod()).unwrap_err().to_string();
        assert!(
            err.contains("no RunPod API key") && err.contains("flash login"),
            "{err}"
        );

        // runpodctl's top-level key, when there is no [default].
        std::fs::write(&config, "apikey = \"runpodctl-key\"\n").unwrap();
        assert_eq!(
            lookup(None).find(&runpod()).unwrap(),
            (
                "runpodctl-key".into(),
                KeySource::RunPodConfig(config.clone())
            )
        );
        // [default].api_key wins over runpodctl's key...
        std::fs::write(
            &config,
            "apikey = \"runpodctl-key\"\n[default]\napi_key = \"config-key\"\n",
        )
        .unwrap();
        assert_eq!(
            lookup(None).find(&runpod()).unwrap(),
            ("config-key".into(), KeySource::RunPodConfig(config.clone()))
        );
        // ...and a [default] without api_key hides it, as in runpod-flash.
        std::fs::write(
            &config,
            "apikey = \"runpodctl-key\"\n[default]\nother = 1\n",
        )
        .unwrap();
        assert!(lookup(None).find(&runpod()).is_err());
        std::fs::write(&config, "[default]\napi_key = \"config-key\"\n").unwrap();

        // A .env without the key does not stop the search at config.toml...
        std::fs::write(project.join(".env"), "OTHER=1\n").unwrap();
        assert_eq!(lookup(None).find(&runpod()).unwrap().0, "config-key");
        // ...but the nearest .env decides: one further up is not read.
        std::fs::write(
            tmp.path().join("work/.env"),
            "RUNPOD_API_KEY=\"upper-key\"\n",
        )
        .unwrap();
        assert_eq!(lookup(None).find(&runpod()).unwrap().0, "config-key");
        std::fs::remove_file(project.join(".env")).unwrap();
        // A .env above the working directory wins over config.toml.
        assert_eq!(
            lookup(None).find(&runpod()).unwrap(),
            (
                "upper-key".into(),
                KeySource::DotEnv(tmp.path().join("work/.env"))
            )
        );

        // The environment wins over everything; blank means unset.
        assert_eq!(
            lookup(Some(" env-key ")).find(&runpod()).unwrap(),
            ("env-key".into(), KeySource::Env)
        );
        assert_eq!(lookup(Some("  ")).find(&runpod()).unwrap().0, "upper-key");
    }

    #[test]
    fn a_broken_config_toml_says_how_to_fix_it() {
        let tmp = tempfile::tempdir().unwrap();
        let config = runpod_config_path(tmp.path());
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "[default\napi_key = 1").unwrap();
        let err = KeyLookup {
            env_key: None,
            cwd: tmp.path(),
            home: Some(tmp.path()),
            local_data_dir: None,
        }
        .find(&runpod())
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("is not valid TOML") && text.contains("flash login"),
            "{text}"
        );
    }

    #[test]
    fn a_local_server_never_gets_a_runpod_key_from_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".env"), "RUNPOD_API_KEY=rp-secret\n").unwrap();
        let config = runpod_config_path(tmp.path());
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "[default]\napi_key = \"rp-secret\"\n").unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let lookup = KeyLookup {
            env_key: None,
            cwd: tmp.path(),
            home: Some(tmp.path()),
            local_data_dir: Some(&data),
        };
        let err = lookup.find(&local()).unwrap_err().to_string();
        assert!(err.contains("start `flash server`"), "{err}");
        let key_file = flash_control::auth::api_key_path(&data);
        std::fs::write(&key_file, "local-key\n").unwrap();
        assert_eq!(
            lookup.find(&local()).unwrap(),
            ("local-key".into(), KeySource::File(key_file))
        );
        // RUNPOD_API_KEY still applies to a local server (the user said so explicitly).
        let explicit = KeyLookup {
            env_key: Some("env-key".into()),
            ..lookup
        };
        assert_eq!(explicit.find(&local()).unwrap().0, "env-key");
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn login_keeps_every_other_byte_of_config_toml() {
        let tmp = tempfile::tempdir().unwrap();
        let config = runpod_config_path(tmp.path());
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        let before = "# runpodctl\r\napikey = \"ctl-key\"   # keep me\r\napiurl = \"https://api.runpod.io/graphql\"\r\n\r\n[default]\r\napi_key = \"old\" # flash\r\nregion = \"EU\"\r\n\r\n[staging]\r\napi_key = \"staging-key\"\r\n";
        std::fs::write(&config, before).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let saved = save_runpod_key(&config, "new-key").unwrap();
        assert_eq!(
            saved,
            SavedKey {
                path: config.clone(),
                unchanged: false,
                backup: None
            }
        );
        let after = std::fs::read_to_string(&config).unwrap();
        assert_eq!(
            after,
            before.replace("api_key = \"old\"", "api_key = \"new-key\""),
            "only the one value changes"
        );
        #[cfg(unix)]
        assert_eq!(mode(&config), 0o600);
        // Read back by the lookup, as runpod-flash would.
        let found = KeyLookup {
            env_key: None,
            cwd: tmp.path(),
            home: Some(tmp.path()),
            local_data_dir: None,
        }
        .find(&runpod())
        .unwrap();
        assert_eq!(found.0, "new-key");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(config.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.toml"]);
        // Saving the same key again writes nothing.
        assert!(save_runpod_key(&config, "new-key").unwrap().unchanged);
    }

    #[test]
    fn login_adds_a_default_table_and_creates_a_private_file() {
        let tmp = tempfile::tempdir().unwrap();
        let config = runpod_config_path(tmp.path());
        save_runpod_key(&config, "k1").unwrap();
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            "[default]\napi_key = \"k1\"\n"
        );
        #[cfg(unix)]
        {
            assert_eq!(mode(&config), 0o600);
            assert_eq!(mode(config.parent().unwrap()), 0o700);
        }
        // runpodctl's file: its keys stay, [default] is added.
        std::fs::write(&config, "apikey = \"ctl\"\napiurl = \"u\"\n").unwrap();
        save_runpod_key(&config, "k2").unwrap();
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.starts_with("apikey = \"ctl\"\napiurl = \"u\"\n")
                && text.contains("[default]\napi_key = \"k2\""),
            "{text}"
        );
        // An inline default table is updated in place.
        assert_eq!(
            upsert_default_api_key("default = { api_key = \"a\", x = 1 }\n", "b").unwrap(),
            "default = { api_key = \"b\", x = 1 }\n"
        );
    }

    #[test]
    fn an_invalid_config_toml_is_kept_as_a_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let config = runpod_config_path(tmp.path());
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "not = [valid").unwrap();
        let saved = save_runpod_key(&config, "k").unwrap();
        let backup = saved.backup.expect("a backup");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "not = [valid");
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            "[default]\napi_key = \"k\"\n"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_config_toml_is_written_through_the_link() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("dotfiles/runpod.toml");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "apikey = \"ctl\"\n").unwrap();
        let config = runpod_config_path(tmp.path());
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&real, &config).unwrap();
        let saved = save_runpod_key(&config, "k").unwrap();
        assert_eq!(saved.path, std::fs::canonicalize(&real).unwrap());
        assert!(
            std::fs::symlink_metadata(&config)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            std::fs::read_to_string(&config)
                .unwrap()
                .contains("api_key = \"k\"")
        );
    }

    #[test]
    fn a_local_key_is_saved_in_the_data_dir_never_over_another_one() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("flash-home");
        let saved = save_key(&local(), "fl_1", Some(tmp.path()), Some(&data)).unwrap();
        let key_file = flash_control::auth::api_key_path(&data);
        assert_eq!(saved.path, key_file);
        assert_eq!(std::fs::read_to_string(&key_file).unwrap(), "fl_1");
        #[cfg(unix)]
        assert_eq!(mode(&key_file), 0o600);
        assert!(
            !runpod_config_path(tmp.path()).exists(),
            "a local key never goes into RunPod's file"
        );
        assert!(
            save_key(&local(), "fl_1", None, Some(&data))
                .unwrap()
                .unchanged
        );
        let err = save_key(&local(), "fl_2", None, Some(&data))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("already holds another key") && err.contains("FLASH_HOME"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&key_file).unwrap(), "fl_1");
    }
}
