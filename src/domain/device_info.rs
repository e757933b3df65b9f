//! The client a sign-in comes from, as it describes itself or as its user agent shows it, and the
//! channel its tokens belong to.

use super::error::{Error, Result};
use super::identity::is_layout_control;

/// Tokens of browsers that sign in without describing themselves as a device.
pub const CHANNEL_WEB: &str = "web";

/// Tokens of apps and media servers that sign in as a named device.
pub const CHANNEL_DEVICE: &str = "device";

/// How a client describes itself when it signs in.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    pub client_id: String,
    pub product: String,
    pub platform: String,
    pub name: String,
}

const FIELD_MAX: usize = 128;

/// Whether a plex.tv-style client is a web app (`Plex Web`, or a browser as its platform): its
/// tokens belong to the `web` channel although it names itself as a device.
pub(crate) fn is_browser_app(product: &str, platform: &str) -> bool {
    const BROWSERS: [&str; 6] = ["chrome", "firefox", "safari", "edge", "opera", "microsoft edge"];
    let platform = platform.to_ascii_lowercase();
    product.to_ascii_lowercase().ends_with(" web") || BROWSERS.contains(&platform.as_str())
}

fn clean_field(value: &str, required: bool, what: &'static str) -> Result<String> {
    let value = value.trim();
    let unprintable = value.chars().any(|c| c.is_control() || is_layout_control(c));
    if (required && value.is_empty()) || value.chars().count() > FIELD_MAX || unprintable {
        return Err(Error::InvalidDevice(what));
    }
    Ok(value.to_owned())
}

impl DeviceInfo {
    pub(crate) fn validated(&self) -> Result<Self> {
        Ok(Self {
            client_id: clean_field(&self.client_id, true, "device.client_id must be 1 to 128 printable characters")?,
            product: clean_field(&self.product, false, "device.product must be at most 128 printable characters")?,
            platform: clean_field(&self.platform, false, "device.platform must be at most 128 printable characters")?,
            name: clean_field(&self.name, false, "device.name must be at most 128 printable characters")?,
        })
    }

    /// Whether a plex.tv-style client is a web app.
    pub(crate) fn is_browser_app(&self) -> bool {
        is_browser_app(&self.product, &self.platform)
    }

    /// A browser that did not name itself: a device of its own, named after its user agent.
    pub(crate) fn browser(user_agent: Option<&str>) -> Self {
        let (browser, system) = user_agent.map_or(("Web browser", ""), describe_user_agent);
        let name = if system.is_empty() { browser.to_owned() } else { format!("{browser} on {system}") };
        Self {
            client_id: format!("browser-{}", uuid::Uuid::new_v4()),
            product: browser.into(),
            platform: system.into(),
            name,
        }
    }
}

/// A person-readable browser and system from a User-Agent ("Chrome", "Linux"); order matters, since
/// Edge and Chrome also claim to be Safari and most browsers claim to be Mozilla.
fn describe_user_agent(agent: &str) -> (&'static str, &'static str) {
    let browser =
        [("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari")]
            .iter()
            .find(|(marker, _)| agent.contains(marker))
            .map_or("Web browser", |(_, name)| name);
    let system = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(marker, _)| agent.contains(marker))
    .map_or("", |(_, name)| name);
    (browser, system)
}

#[cfg(test)]
mod tests {
    #[test]
    fn browsers_are_named_after_their_user_agent() {
        let chrome =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        assert_eq!(super::describe_user_agent(chrome), ("Chrome", "Linux"));
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36 Edg/120.0";
        assert_eq!(super::describe_user_agent(edge), ("Edge", "Windows"));
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile Safari/604.1";
        assert_eq!(super::describe_user_agent(iphone), ("Safari", "iOS"));
        assert_eq!(super::describe_user_agent("curl/8.0"), ("Web browser", ""));
    }
}
