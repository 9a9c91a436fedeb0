//! SVG to PNG with resvg, text set in the system's fonts.

use resvg::{tiny_skia, usvg};

/// Renders `svg` at `scale` (1: one pixel per SVG unit) and returns the PNG
/// file's bytes with its width and height.
pub fn png(svg: &str, scale: f32) -> Result<(Vec<u8>, u32, u32), String> {
    let mut opt = usvg::Options {
        font_family: "DejaVu Sans".to_string(),
        ..usvg::Options::default()
    };
    opt.fontdb_mut().load_system_fonts();
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| format!("invalid SVG: {e}"))?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(scale)
        .ok_or("the picture is too large to render")?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or("the picture is too large to render")?;
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    let data = pixmap
        .encode_png()
        .map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok((data, size.width(), size.height()))
}

/// Whether any font was found for text (without one the PNG has no labels).
pub fn has_fonts() -> bool {
    let mut db = usvg::fontdb::Database::new();
    db.load_system_fonts();
    !db.is_empty()
}
