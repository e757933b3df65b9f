//! The pages' brand colours, from configuration, held to WCAG AA contrast before they reach a stylesheet.

use std::fmt;
use std::str::FromStr;

/// WCAG 2.x contrast ratio for normal text, level AA.
pub const MIN_CONTRAST: f64 = 4.5;

const WHITE: Colour = Colour(0xff, 0xff, 0xff);
const NEAR_BLACK: Colour = Colour(0x11, 0x14, 0x1c);
/// The body text colour of the stylesheet, used for links when the accent is too pale to read.
const BODY_TEXT: Colour = Colour(0x1d, 0x23, 0x30);

/// An sRGB colour written `#rgb` or `#rrggbb`; nothing else can reach the stylesheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour(u8, u8, u8);

impl FromStr for Colour {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix('#').filter(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
        let channel = |h: &str| u8::from_str_radix(h, 16).map_err(|e| e.to_string());
        match hex {
            Some(h) if h.len() == 6 => Ok(Self(channel(&h[0..2])?, channel(&h[2..4])?, channel(&h[4..6])?)),
            Some(h) if h.len() == 3 => {
                let short = |i: usize| channel(&h[i..=i]).map(|v| v * 17);
                Ok(Self(short(0)?, short(1)?, short(2)?))
            }
            _ => Err(format!("{s:?} is not a colour written #rgb or #rrggbb")),
        }
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

impl Colour {
    /// Relative luminance as WCAG 2.x defines it.
    fn luminance(self) -> f64 {
        let linear = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.040_45 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * linear(self.0) + 0.7152 * linear(self.1) + 0.0722 * linear(self.2)
    }

    /// The WCAG contrast ratio between two colours, from 1 to 21.
    pub fn contrast(self, other: Self) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        (a.max(b) + 0.05) / (a.min(b) + 0.05)
    }
}

/// The colours the stylesheet takes from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub accent: Colour,
    pub accent_text: Colour,
    /// Links sit on white cards: the accent when it is readable there, else the body text colour.
    pub link: Colour,
}

impl Theme {
    /// Checks the configured colours; text on the accent colour defaults to whichever of white or
    /// near-black reads better, and an explicit choice must meet WCAG AA.
    pub fn new(accent: &str, accent_text: Option<&str>) -> Result<Self, String> {
        let accent: Colour = accent.parse().map_err(|e| format!("pages.accent_color: {e}"))?;
        let accent_text = match accent_text {
            Some(text) => {
                let text: Colour = text.parse().map_err(|e| format!("pages.accent_text_color: {e}"))?;
                let ratio = accent.contrast(text);
                if ratio < MIN_CONTRAST {
                    return Err(format!(
                        "pages.accent_text_color {text} on pages.accent_color {accent} has a contrast of {ratio:.2}:1; \
                         people need at least {MIN_CONTRAST}:1 to read it (WCAG AA)"
                    ));
                }
                text
            }
            None if accent.contrast(WHITE) >= accent.contrast(NEAR_BLACK) => WHITE,
            None => NEAR_BLACK,
        };
        let link = if accent.contrast(WHITE) >= MIN_CONTRAST { accent } else { BODY_TEXT };
        Ok(Self { accent, accent_text, link })
    }

    /// The custom properties that override the stylesheet's defaults.
    pub fn css(&self) -> String {
        format!(
            "\n/* From configuration (pages.accent_color). */\n:root {{ --accent: {}; --accent-text: {}; --link: {}; }}\n",
            self.accent, self.accent_text, self.link
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_parse_only_in_hex() {
        assert_eq!("#2450d6".parse::<Colour>().unwrap(), Colour(0x24, 0x50, 0xd6));
        assert_eq!("#fa0".parse::<Colour>().unwrap(), Colour(0xff, 0xaa, 0x00));
        for bad in ["2450d6", "#2450d", "red", "#gggggg", "#fff; } body { display:none", ""] {
            assert!(bad.parse::<Colour>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn contrast_matches_wcag_reference_values() {
        assert!((WHITE.contrast(Colour(0, 0, 0)) - 21.0).abs() < 0.01);
        // #767676 on white is the well-known smallest grey that passes AA (4.54:1).
        assert!((Colour(0x76, 0x76, 0x76).contrast(WHITE) - 4.54).abs() < 0.01);
    }

    #[test]
    fn text_on_the_accent_is_chosen_or_checked_for_contrast() {
        let dark = Theme::new("#2450d6", None).unwrap();
        assert_eq!((dark.accent_text, dark.link), (WHITE, dark.accent));
        let pale = Theme::new("#ffd33d", None).unwrap();
        assert_eq!((pale.accent_text, pale.link), (NEAR_BLACK, BODY_TEXT), "yellow takes dark text, links stay dark");
        let refused = Theme::new("#ffd33d", Some("#ffffff")).unwrap_err();
        assert!(refused.contains("contrast"), "{refused}");
        assert!(Theme::new("blue", None).is_err());
    }
}
