//! Settings that only the desktop shell reads, layered like the backend's configuration
//! (environment, then `.env.local`, then `.env`, then the default) and validated the same way.

use collisionos::config::{ConfigError, Layers};

/// `COLLISIONOS_CLOSE_TO_TRAY` (false): closing the window hides it to the tray instead of
/// quitting. Quit from the tray menu always quits.
pub const CLOSE_TO_TRAY: &str = "COLLISIONOS_CLOSE_TO_TRAY";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub close_to_tray: bool,
}

impl Settings {
    /// From the process environment and the dotenv files in the working directory.
    pub fn load() -> Result<Self, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
        Self::from_layers(&Layers::from_process(&cwd)?)
    }

    pub fn from_layers(layers: &Layers) -> Result<Self, ConfigError> {
        let found = [
            (&layers.env, "environment"),
            (&layers.env_local, ".env.local"),
            (&layers.dot_env, ".env"),
        ]
        .into_iter()
        .find_map(|(map, source)| map.get(CLOSE_TO_TRAY).map(|v| (v.trim(), source)));
        let close_to_tray = match found {
            None | Some(("", _)) => false,
            Some((v, source)) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError {
                        var: CLOSE_TO_TRAY,
                        value: v.to_string(),
                        source_name: source.to_string(),
                        problem: "not a boolean".into(),
                        expected: "true or false".into(),
                    });
                }
            },
        };
        Ok(Self { close_to_tray })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(env: &[(&str, &str)], dot_env: &[(&str, &str)]) -> Layers {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Layers {
            env: map(env),
            env_local: Default::default(),
            dot_env: map(dot_env),
        }
    }

    #[test]
    fn closing_the_window_quits_by_default() {
        let s = Settings::from_layers(&layers(&[], &[])).unwrap();
        assert!(!s.close_to_tray);
    }

    #[test]
    fn the_environment_wins_over_dotenv() {
        let l = layers(&[(CLOSE_TO_TRAY, "no")], &[(CLOSE_TO_TRAY, "yes")]);
        assert!(!Settings::from_layers(&l).unwrap().close_to_tray);
        let l = layers(&[], &[(CLOSE_TO_TRAY, "TRUE")]);
        assert!(Settings::from_layers(&l).unwrap().close_to_tray);
    }

    #[test]
    fn a_malformed_value_names_the_variable_and_its_source() {
        let err = Settings::from_layers(&layers(&[], &[(CLOSE_TO_TRAY, "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(CLOSE_TO_TRAY), "{err}");
        assert!(err.contains(".env"), "{err}");
        assert!(err.contains("true or false"), "{err}");
    }
}
