//! The tray icon: its colour is the backend's health (ok green, warning amber, critical red,
//! offline grey), its menu opens the window or quits.

use collisionos::HealthLevel;
use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Wry};

/// Menu item ids.
pub const OPEN: &str = "open";
pub const QUIT: &str = "quit";

const OK_PNG: &[u8] = include_bytes!("../../icons/tray-ok.png");
const WARNING_PNG: &[u8] = include_bytes!("../../icons/tray-warning.png");
const CRITICAL_PNG: &[u8] = include_bytes!("../../icons/tray-critical.png");
const OFFLINE_PNG: &[u8] = include_bytes!("../../icons/tray-offline.png");

fn png(level: HealthLevel) -> &'static [u8] {
    match level {
        HealthLevel::Ok => OK_PNG,
        HealthLevel::Warning => WARNING_PNG,
        HealthLevel::Critical => CRITICAL_PNG,
        HealthLevel::Offline => OFFLINE_PNG,
    }
}

/// The icon for `level`.
pub fn icon(level: HealthLevel) -> tauri::Result<Image<'static>> {
    Image::from_bytes(png(level))
}

/// What the tooltip (where the platform shows one) says.
pub fn tooltip(level: HealthLevel) -> &'static str {
    match level {
        HealthLevel::Ok => "CollisionOS Monitor: healthy",
        HealthLevel::Warning => "CollisionOS Monitor: memory warning",
        HealthLevel::Critical => "CollisionOS Monitor: memory critical",
        HealthLevel::Offline => "CollisionOS Monitor: offline (working locally)",
    }
}

/// Builds the tray. `on_open` and `on_quit` are the shell's actions for the two menu items (and
/// a left click, where the platform reports one, opens).
pub fn build(
    app: &AppHandle,
    level: HealthLevel,
    on_open: fn(&AppHandle),
    on_quit: fn(&AppHandle),
) -> tauri::Result<TrayIcon> {
    let open = MenuItem::with_id(app, OPEN, "Open CollisionOS Monitor", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, QUIT, "Quit", true, None::<&str>)?;
    let separator = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(app, &[&open, &separator, &quit])?;
    TrayIconBuilder::<Wry>::with_id("main")
        .icon(icon(level)?)
        .tooltip(tooltip(level))
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(move |app, event| match event.id.as_ref() {
            OPEN => on_open(app),
            QUIT => on_quit(app),
            _ => {}
        })
        .on_tray_icon_event(move |tray, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                on_open(tray.app_handle());
            }
        })
        .build(app)
}

/// Shows `level` on the tray.
pub fn show(tray: &TrayIcon, level: HealthLevel) -> tauri::Result<()> {
    tray.set_icon(Some(icon(level)?))?;
    tray.set_tooltip(Some(tooltip(level)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: [HealthLevel; 4] = [
        HealthLevel::Ok,
        HealthLevel::Warning,
        HealthLevel::Critical,
        HealthLevel::Offline,
    ];

    /// The colour in the middle of the icon's left edge of the circle (inside it, outside the
    /// pulse line).
    fn fill(level: HealthLevel) -> [u8; 4] {
        let image = icon(level).expect("decodes");
        assert_eq!((image.width(), image.height()), (64, 64));
        let (x, y) = (32usize, 10usize);
        let at = (y * 64 + x) * 4;
        image.rgba()[at..at + 4].try_into().unwrap()
    }

    #[test]
    fn each_level_has_its_own_colour() {
        let expect = [
            [0x16, 0xa3, 0x4a],
            [0xf5, 0x9e, 0x0b],
            [0xdc, 0x26, 0x26],
            [0x6b, 0x72, 0x80],
        ];
        for (level, rgb) in LEVELS.into_iter().zip(expect) {
            let px = fill(level);
            assert_eq!(px[3], 255, "{level:?} is opaque");
            for c in 0..3 {
                assert!(
                    px[c].abs_diff(rgb[c]) <= 2,
                    "{level:?}: {px:?} is not {rgb:?}"
                );
            }
        }
    }

    #[test]
    fn each_level_says_what_it_is() {
        let tips: std::collections::HashSet<_> = LEVELS.into_iter().map(tooltip).collect();
        assert_eq!(tips.len(), 4);
    }
}
