//! What every chart of the command shares: the embedded font, the palette, and a bitmap
//! backend that lays text out properly.

use std::sync::OnceLock;

use plotters::style::{FontStyle, RGBColor};

pub(crate) use raster::Raster;

/// DejaVu Sans 2.37, subset to Latin, Greek, punctuation, arrows and math operators (see
/// `assets/README.md`).
pub(crate) static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

/// The family the embedded font is registered under. Used verbatim as the SVG `font-family`,
/// so it is also a CSS font list: the viewer's DejaVu Sans if it has it, else a look-alike.
pub(crate) const FAMILY: &str = "DejaVu Sans, Verdana, sans-serif";

/// A qualitative palette: 12 well-separated colors first (the default run has 12 optimizers),
/// then 4 more; beyond 16 optimizers colors repeat.
const PALETTE: [(u8, u8, u8); 16] = [
    (0x1f, 0x77, 0xb4), // blue
    (0xff, 0x7f, 0x0e), // orange
    (0x2c, 0xa0, 0x2c), // green
    (0xd6, 0x27, 0x28), // red
    (0x94, 0x67, 0xbd), // purple
    (0x8c, 0x56, 0x4b), // brown
    (0xe3, 0x77, 0xc2), // pink
    (0x7f, 0x7f, 0x7f), // gray
    (0xbc, 0xbd, 0x22), // olive
    (0x17, 0xbe, 0xcf), // cyan
    (0x39, 0x3b, 0x79), // navy
    (0x00, 0x00, 0x00), // black
    (0xe7, 0xba, 0x52), // gold
    (0x63, 0x79, 0x39), // moss
    (0xad, 0x49, 0x4a), // brick
    (0x7b, 0x41, 0x73), // plum
];

/// The color of the `index`-th optimizer, as `#rrggbb` (for HTML swatches).
pub(crate) fn color_hex(index: usize) -> String {
    let (r, g, b) = PALETTE[index % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The color of the `index`-th optimizer.
pub(crate) fn color(index: usize) -> RGBColor {
    let (r, g, b) = PALETTE[index % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Registers the embedded font with plotters, once per process.
pub(crate) fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the embedded font could not be loaded".to_owned())
    }
}

mod raster {
    //! Text rasterization for bitmap charts.

    use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
    use plotters::prelude::DrawingBackend;
    use plotters::style::text_anchor::{HPos, VPos};
    use plotters_backend::{
        BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontTransform,
    };

    /// A bitmap backend that rasterizes text itself with `ab_glyph`.
    ///
    /// plotters' own `ab_glyph` text drawing places each glyph at its advance without its side
    /// bearings, which makes letter spacing visibly uneven; this draws the same text (same size,
    /// anchors and rotations) with glyphs where the font puts them. Everything else is passed on.
    pub(crate) struct Raster<'a, B> {
        inner: B,
        font: FontRef<'a>,
    }

    impl<'a, B> Raster<'a, B> {
        /// Wraps `inner`, drawing text with the font in `font` (the bytes of a TrueType file).
        pub(crate) fn new(inner: B, font: &'a [u8]) -> Result<Self, String> {
            let font = FontRef::try_from_slice(font).map_err(|e| e.to_string())?;
            Ok(Raster { inner, font })
        }

        /// Width and height of `text` at `size`, and the glyphs positioned from the top-left of
        /// that box.
        fn layout(&self, text: &str, size: f64) -> (f32, f32, Vec<ab_glyph::Glyph>) {
            let scale = PxScale::from(size as f32);
            let font = self.font.as_scaled(scale);
            let mut caret = 0.0f32;
            let mut previous = None;
            let mut glyphs = Vec::with_capacity(text.len());
            for c in text.chars() {
                let id = font.glyph_id(c);
                if let Some(p) = previous {
                    caret += font.kern(p, id);
                }
                glyphs.push(id.with_scale_and_position(scale, point(caret, font.ascent())));
                caret += font.h_advance(id);
                previous = Some(id);
            }
            (caret, font.ascent() - font.descent(), glyphs)
        }
    }

    impl<B: DrawingBackend> DrawingBackend for Raster<'_, B> {
        type ErrorType = B::ErrorType;

        fn get_size(&self) -> (u32, u32) {
            self.inner.get_size()
        }

        fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.inner.ensure_prepared()
        }

        fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.inner.present()
        }

        fn draw_pixel(
            &mut self,
            point: BackendCoord,
            color: BackendColor,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.inner.draw_pixel(point, color)
        }

        fn draw_line<S: BackendStyle>(
            &mut self,
            from: BackendCoord,
            to: BackendCoord,
            style: &S,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.inner.draw_line(from, to, style)
        }

        fn draw_rect<S: BackendStyle>(
            &mut self,
            upper_left: BackendCoord,
            bottom_right: BackendCoord,
            style: &S,
            fill: bool,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.inner.draw_rect(upper_left, bottom_right, style, fill)
        }

        fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
            &mut self,
            path: I,
            style: &S,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.inner.draw_path(path, style)
        }

        fn draw_circle<S: BackendStyle>(
            &mut self,
            center: BackendCoord,
            radius: u32,
            style: &S,
            fill: bool,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.inner.draw_circle(center, radius, style, fill)
        }

        fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
            &mut self,
            vert: I,
            style: &S,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.inner.fill_polygon(vert, style)
        }

        fn blit_bitmap(
            &mut self,
            pos: BackendCoord,
            (iw, ih): (u32, u32),
            src: &[u8],
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.inner.blit_bitmap(pos, (iw, ih), src)
        }

        fn estimate_text_size<S: BackendTextStyle>(
            &self,
            text: &str,
            style: &S,
        ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
            let (w, h, _) = self.layout(text, style.size());
            let (w, h) = (w.ceil().max(0.0) as u32, h.ceil().max(0.0) as u32);
            Ok(match style.transform() {
                FontTransform::Rotate90 | FontTransform::Rotate270 => (h, w),
                _ => (w, h),
            })
        }

        fn draw_text<S: BackendTextStyle>(
            &mut self,
            text: &str,
            style: &S,
            pos: BackendCoord,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            let color = style.color();
            if color.alpha == 0.0 {
                return Ok(());
            }
            let (width, height, glyphs) = self.layout(text, style.size());
            let anchor = style.anchor();
            let dx = match anchor.h_pos {
                HPos::Left => 0.0,
                HPos::Center => -width / 2.0,
                HPos::Right => -width,
            };
            let dy = match anchor.v_pos {
                VPos::Top => 0.0,
                VPos::Center => -height / 2.0,
                VPos::Bottom => -height,
            };
            let (dx, dy) = (dx.round() as i32, dy.round() as i32);
            let transform = style.transform();
            let (w, h) = self.get_size();
            let (w, h) = (
                i32::try_from(w).unwrap_or(i32::MAX),
                i32::try_from(h).unwrap_or(i32::MAX),
            );
            for glyph in glyphs {
                let Some(outline) = self.font.outline_glyph(glyph) else {
                    continue;
                };
                let bounds = outline.px_bounds();
                let (x0, y0) = (bounds.min.x as i32, bounds.min.y as i32);
                let mut pixels = Vec::new();
                outline.draw(|x, y, coverage| pixels.push((x, y, coverage)));
                for (x, y, coverage) in pixels {
                    if coverage <= 0.0 {
                        continue;
                    }
                    let local = (
                        x0 + i32::try_from(x).unwrap_or(0) + dx,
                        y0 + i32::try_from(y).unwrap_or(0) + dy,
                    );
                    let (tx, ty) = transform.transform(local.0, local.1);
                    let (px, py) = (pos.0 + tx, pos.1 + ty);
                    if (0..w).contains(&px) && (0..h).contains(&py) {
                        let alpha = color.alpha * f64::from(coverage.min(1.0));
                        self.inner.draw_pixel(
                            (px, py),
                            BackendColor {
                                alpha,
                                rgb: color.rgb,
                            },
                        )?;
                    }
                }
            }
            Ok(())
        }
    }
}
