//! `hallmark label`: printable QR labels (SVG and PNG) that encode an item's scan URL, for one
//! item or a manufacturer's whole batch. Every item is scanned first; nothing is written unless
//! every item of the batch verifies as authentic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hallmark_protocol::{FederationId, ItemId, ManufacturerId};
use qrcode::{Color, EcLevel, QrCode};
use serde_json::json;

use crate::commands::Ctx;
use crate::verifier::Verdict;

/// Pixels per QR module in the PNG.
const PNG_SCALE: usize = 8;
/// Quiet zone around the code, in modules (the QR standard asks for 4).
const QUIET: usize = 4;

/// What is printed on one label.
pub struct Label {
    /// The item.
    pub item: ItemId,
    /// Its serial number.
    pub serial: String,
    /// Its product description.
    pub product: String,
    /// The URL the QR code encodes.
    pub url: String,
}

/// The scan URL of `item`: the scan page of an operator, pinned to the federation's id so the
/// page can check the trust root it is given.
pub fn scan_url(base: &str, item: &ItemId, federation: &FederationId) -> String {
    format!(
        "{}/scan/?item={item}&federation={federation}",
        base.trim_end_matches('/')
    )
}

/// The QR modules of `text` (medium error correction: survives some wear of the label).
fn modules(text: &str) -> Result<(usize, Vec<bool>)> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .context("the URL does not fit in a QR code")?;
    let w = code.width();
    Ok((
        w,
        code.to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect(),
    ))
}

/// The label as a PNG: the QR code alone with its quiet zone, black on white.
pub fn png(label: &Label) -> Result<Vec<u8>> {
    let (w, dark) = modules(&label.url)?;
    let side = (w + 2 * QUIET) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, _) in dark.iter().enumerate().filter(|(_, d)| **d) {
        let (mx, my) = (i % w + QUIET, i / w + QUIET);
        for y in my * PNG_SCALE..(my + 1) * PNG_SCALE {
            pixels[y * side + mx * PNG_SCALE..y * side + (mx + 1) * PNG_SCALE].fill(0);
        }
    }
    let mut out = Vec::new();
    let side32 = u32::try_from(side).context("label too large")?;
    let mut enc = png::Encoder::new(&mut out, side32, side32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The label as SVG: the QR code with the product, serial and a short item id under it.
pub fn svg(label: &Label) -> Result<String> {
    let (w, dark) = modules(&label.url)?;
    let unit = 4; // SVG user units per module
    let qr = (w + 2 * QUIET) * unit;
    let height = qr + 64;
    let mut path = String::new();
    for (i, _) in dark.iter().enumerate().filter(|(_, d)| **d) {
        let (x, y) = ((i % w + QUIET) * unit, (i / w + QUIET) * unit);
        let _ = write!(path, "M{x} {y}h{unit}v{unit}h-{unit}z");
    }
    let id = label.item.to_string();
    Ok(format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{qr}" height="{height}" viewBox="0 0 {qr} {height}">"#,
            r##"<rect width="100%" height="100%" fill="#fff"/>"##,
            r##"<path d="{path}" fill="#000" shape-rendering="crispEdges"/>"##,
            r##"<g font-family="sans-serif" text-anchor="middle" fill="#000">"##,
            r#"<text x="{cx}" y="{y1}" font-size="13" font-weight="bold">{product}</text>"#,
            r#"<text x="{cx}" y="{y2}" font-size="11">Serial {serial}</text>"#,
            r#"<text x="{cx}" y="{y3}" font-size="9">Scan to verify · {short}…</text>"#,
            r#"</g></svg>"#,
            "\n"
        ),
        qr = qr,
        height = height,
        path = path,
        cx = qr / 2,
        y1 = qr + 12,
        y2 = qr + 30,
        y3 = qr + 48,
        product = xml_escape(&label.product),
        serial = xml_escape(&label.serial),
        short = &id[..16],
    ))
}

/// A file name for the label: the serial (made safe) and the start of the item id.
fn file_stem(label: &Label) -> String {
    let serial: String = label
        .serial
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{serial}_{}", &label.item.to_string()[..8])
}

/// Writes `bytes` to `path` through a temporary file, so a label is whole or absent.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `hallmark label`: items given by id (or hallmark: URI) and/or by serial of the manufacturer
/// whose key is the client's key.
pub async fn label(
    ctx: &Ctx,
    items: &[String],
    serials: &[String],
    out_dir: &Path,
    base_url: Option<&str>,
) -> Result<u8> {
    let mut ids = items
        .iter()
        .map(|s| ctx.item(s))
        .collect::<Result<Vec<_>>>()?;
    if !serials.is_empty() {
        let maker = ManufacturerId::of(&ctx.author()?.key.public_key());
        ids.extend(serials.iter().map(|s| ItemId::new(&maker, s)));
    }
    if ids.is_empty() {
        bail!("name at least one item (id or hallmark: URI) or --serial");
    }
    let base = match base_url {
        Some(b) => b.to_string(),
        None => ctx
            .operators()
            .first()
            .map(|(_, c)| c.base().to_string())
            .context("no operators in the federation file: give --base-url")?,
    };
    // Verify the whole batch before writing anything.
    let mut labels = Vec::new();
    for (n, item) in ids.iter().enumerate() {
        let report = ctx.scan(*item).await;
        let state = match (report.verdict, report.state) {
            (Verdict::Authentic, Some(s)) => s,
            (v, _) => bail!(
                "item {item} is {v:?}, not authentic: {}; no labels written",
                report.reasons.join("; ")
            ),
        };
        if !ctx.json() {
            eprintln!(
                "label: verified {}/{} {item} ({})",
                n + 1,
                ids.len(),
                state.serial
            );
        }
        labels.push(Label {
            item: *item,
            url: scan_url(&base, item, &ctx.federation().id()),
            serial: state.serial,
            product: state.product,
        });
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut written = Vec::new();
    for l in &labels {
        let stem = out_dir.join(file_stem(l));
        let (svg_path, png_path): (PathBuf, PathBuf) =
            (stem.with_extension("svg"), stem.with_extension("png"));
        write_atomic(&svg_path, svg(l)?.as_bytes())?;
        write_atomic(&png_path, &png(l)?)?;
        written.push(json!({
            "item": l.item, "serial": l.serial, "url": l.url,
            "svg": svg_path, "png": png_path,
        }));
    }
    let text = written
        .iter()
        .map(|w| {
            format!(
                "{}  {}\n  {}\n  {}",
                w["serial"].as_str().unwrap_or_default(),
                w["url"].as_str().unwrap_or_default(),
                w["svg"].as_str().unwrap_or_default(),
                w["png"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    ctx.print(&json!({ "labels": written }), &text);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Label {
        let item = ItemId::new(&ManufacturerId([7; 32]), "SN-<1>");
        Label {
            url: scan_url("http://127.0.0.1:27200/", &item, &FederationId([9; 32])),
            item,
            serial: "SN-<1>".into(),
            product: "Chronograph & co".into(),
        }
    }

    #[test]
    fn png_decodes_back_to_the_scan_url() {
        let l = sample();
        let bytes = png(&l).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, text) = grids[0].decode().unwrap();
        assert_eq!(text, l.url);
        assert!(text.starts_with("http://127.0.0.1:27200/scan/?item="));
    }

    #[test]
    fn svg_carries_the_escaped_caption() {
        let s = svg(&sample()).unwrap();
        assert!(s.starts_with("<svg"));
        assert!(s.contains("Chronograph &amp; co"));
        assert!(s.contains("Serial SN-&lt;1&gt;"));
        assert_eq!(file_stem(&sample())[..7], *"SN-_1__");
    }
}
