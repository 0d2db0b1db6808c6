//! Settings that only the desktop shell reads, layered like the backend's configuration
//! (environment, then `.env.local`, then `.env`, then the default) and validated the same way.

use collisionos::config::{ConfigError, Layers};

/// `COLLISIONOS_CLOSE_TO_TRAY` (false): closing the window hides it to the tray instead of
/// quitting. Quit from the tray menu always quits.
pub const CLOSE_TO_TRAY: &str = "COLLISIONOS_CLOSE_TO_TRAY";

/// `COLLISIONOS_GPU_COMPOSITING` (false): let WebKitGTK composite the page with OpenGL. Off, the
/// page is drawn in software: the charts need no GPU, and the web process then loads no GL
/// stack (on Linux about 130 MB less RSS for it, and no Mesa/llvmpipe where there is no GPU).
pub const GPU_COMPOSITING: &str = "COLLISIONOS_GPU_COMPOSITING";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub close_to_tray: bool,
    pub gpu_compositing: bool,
}

impl Settings {
    /// From the process environment and the dotenv files in the working directory.
    pub fn load() -> Result<Self, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
        Self::from_layers(&Layers::from_process(&cwd)?)
    }

    pub fn from_layers(layers: &Layers) -> Result<Self, ConfigError> {
        Ok(Self {
            close_to_tray: flag(layers, CLOSE_TO_TRAY)?,
            gpu_compositing: flag(layers, GPU_COMPOSITING)?,
        })
    }
}

/// A boolean variable, false when unset or empty.
fn flag(layers: &Layers, var: &'static str) -> Result<bool, ConfigError> {
    let found = [
        (&layers.env, "environment"),
        (&layers.env_local, ".env.local"),
        (&layers.dot_env, ".env"),
    ]
    .into_iter()
    .find_map(|(map, source)| map.get(var).map(|v| (v.trim(), source)));
    match found {
        None | Some(("", _)) => Ok(false),
        Some((v, source)) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(ConfigError {
                var,
                value: v.to_string(),
                source_name: source.to_string(),
                problem: "not a boolean".into(),
                expected: "true or false".into(),
            }),
        },
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
    fn closing_the_window_quits_and_the_page_is_drawn_in_software_by_default() {
        let s = Settings::from_layers(&layers(&[], &[])).unwrap();
        assert!(!s.close_to_tray);
        assert!(!s.gpu_compositing);
        let l = layers(&[(GPU_COMPOSITING, "on")], &[]);
        assert!(Settings::from_layers(&l).unwrap().gpu_compositing);
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
