//! A chain of images (one full image, then its incrementals in order), checked as a whole
//! before anything is restored or merged from it.
//!
//! Invariants checked by [`Chain::open`], all from metadata (no stored block is read):
//! every image passes [`image::read_meta`]; the first is full and the others incremental;
//! all are of one device (UUID, geometry); each incremental names the image before it as
//! its parent by UUID *and* by content digest, and counts its changes from that image's
//! new generation; and the summary of each image equals its parent's summary with the
//! image's own entries applied, so the last image's content digest vouches for the state
//! the whole chain produces. The stored bytes are checked as they are read
//! ([`image::read_block`]).
//!
//! Cost: the metadata of every image (40 bytes per entry, 8 bytes per write block of the
//! device per image) and one final map of 8 bytes per write block.

use super::image::{
    self, fingerprint, BlockEntry, FileSource, ImageError, ImageHeader, ImageMeta, ImageTail,
    FLAG_COMPRESSED, FLAG_INCREMENTAL, FLAG_SYNTHETIC,
};
use super::writer::ImageWriter;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// An image opened for reading with its checked metadata.
pub struct OpenImage {
    pub path: PathBuf,
    pub source: FileSource,
    pub meta: ImageMeta,
}

impl OpenImage {
    pub fn open(path: &Path) -> Result<OpenImage> {
        let source = FileSource::open(path).with_context(|| format!("opening image {}", path.display()))?;
        let meta = image::read_meta(&source, &path.display().to_string())?;
        Ok(OpenImage { path: path.to_path_buf(), source, meta })
    }
}

/// Where the final content of one write block comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Final {
    Free,
    /// Stored in image `image` of the chain, as its entry `entry`.
    Data {
        image: u32,
        entry: u32,
    },
}

pub struct Chain {
    pub images: Vec<OpenImage>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn uuid_string(uuid: &[u8; 16]) -> String {
    let h = hex(uuid);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl Chain {
    /// Opens and checks a chain: see the module comment for every rule.
    pub fn open(paths: &[PathBuf]) -> Result<Chain> {
        if paths.is_empty() {
            bail!("no image given");
        }
        let images: Vec<OpenImage> = paths.iter().map(|p| OpenImage::open(p)).collect::<Result<_>>()?;
        let first = &images[0].meta;
        if first.header.is_incremental() {
            bail!(
                "{}: is an incremental image (parent {}); a chain starts with a full image",
                first.path,
                uuid_string(&first.header.parent_uuid)
            );
        }
        let mut summary = first.summary.clone();
        for pair in images.windows(2) {
            let (parent, child) = (&pair[0].meta, &pair[1].meta);
            check_link(parent, child)?;
            for entry in &child.entries {
                summary[entry.wblock as usize] = fingerprint(entry);
            }
            if summary != child.summary {
                bail!(
                    "{}: its block summary does not follow from the chain before it (an image of \
                     this chain was altered or is missing)",
                    child.path
                );
            }
        }
        Ok(Chain { images })
    }

    pub fn last(&self) -> &OpenImage {
        &self.images[self.images.len() - 1]
    }

    pub fn header(&self) -> &ImageHeader {
        &self.last().meta.header
    }

    /// Per write block, the image whose entry holds its final state.
    pub fn final_map(&self) -> Vec<Final> {
        let mut map = vec![Final::Free; self.header().wblock_count as usize];
        for (i, image) in self.images.iter().enumerate() {
            for (e, entry) in image.meta.entries.iter().enumerate() {
                map[entry.wblock as usize] = if entry.is_data() {
                    Final::Data { image: i as u32, entry: e as u32 }
                } else {
                    Final::Free
                };
            }
        }
        map
    }

    pub fn entry(&self, image: u32, entry: u32) -> (&OpenImage, &BlockEntry) {
        let img = &self.images[image as usize];
        (img, &img.meta.entries[entry as usize])
    }
}

fn check_link(parent: &ImageMeta, child: &ImageMeta) -> Result<()> {
    let (p, c) = (&parent.header, &child.header);
    if !c.is_incremental() {
        bail!("{}: is a full image; after the first image a chain holds only incrementals", child.path);
    }
    if c.device_uuid != p.device_uuid
        || c.write_block_size != p.write_block_size
        || c.wblock_count != p.wblock_count
        || c.first_wblock_offset != p.first_wblock_offset
    {
        bail!("{}: is of another device or geometry than {}", child.path, parent.path);
    }
    if c.parent_uuid != p.image_uuid {
        bail!(
            "{}: its parent is image {}, but the image before it in the chain is {} ({}): wrong base \
             or out of order",
            child.path,
            uuid_string(&c.parent_uuid),
            uuid_string(&p.image_uuid),
            parent.path
        );
    }
    if c.parent_digest != parent.content_digest {
        bail!(
            "{}: its parent's content digest is {}, but {} has {}: the parent image is not the one this \
             incremental was taken against",
            child.path,
            hex(&c.parent_digest),
            parent.path,
            hex(&parent.content_digest)
        );
    }
    if c.base_generation != p.new_generation {
        bail!(
            "{}: counts changes from bitmap generation {:#x}, but {} started generation {:#x}",
            child.path,
            c.base_generation,
            parent.path,
            p.new_generation
        );
    }
    Ok(())
}

/// Folds a chain into one synthetic full image at `out`. It carries the last image's UUID,
/// new generation and content digest, so it can stand in for the chain as the base of
/// later incrementals. Stored blocks are copied as stored (not recompressed), each
/// verified against its checksum first.
pub fn merge(paths: &[PathBuf], out: &Path) -> Result<MergeReport> {
    let chain = Chain::open(paths)?;
    let last = chain.last();
    let first = &chain.images[0].meta.header;
    let map = chain.final_map();
    let mut header = last.meta.header.clone();
    let any_compressed = map.iter().any(|f| match f {
        Final::Data { image, entry } => chain.entry(*image, *entry).1.compression != image::COMPRESSION_NONE,
        Final::Free => false,
    });
    header.flags = FLAG_SYNTHETIC | if any_compressed { FLAG_COMPRESSED } else { 0 };
    header.flags &= !FLAG_INCREMENTAL;
    header.parent_uuid = [0; 16];
    header.parent_digest = [0; 16];
    header.base_generation = first.base_generation;
    header.created_unix_s = super::unix_now_s();
    let mut writer = ImageWriter::create(out, header)?;
    let reserved_plain = image::read_reserved(&last.source, &last.meta)?;
    let r = last.meta.reserved;
    let reserved_stored =
        if r.compression == image::COMPRESSION_NONE {
            reserved_plain
        } else {
            let mut stored = vec![0u8; r.stored_len as usize];
            image::ReadAt::read_exact_at(&last.source, &mut stored, r.offset)
                .map_err(|e| ImageError::Io { path: last.meta.path.clone(), offset: r.offset, source: e })?;
            stored
        };
    writer.write_reserved(&reserved_stored, r.compression, r.checksum)?;
    let mut plain = vec![0u8; last.meta.header.write_block_size as usize];
    let mut report = MergeReport::default();
    for (wblock, fin) in map.iter().enumerate() {
        match *fin {
            Final::Free => writer.write_free(wblock as u32),
            Final::Data { image, entry } => {
                let (img, e) = chain.entry(image, entry);
                let stored = image::read_block_stored(&img.source, &img.meta, e, &mut plain)?;
                writer.write_block(*e, &stored)?;
                report.blocks += 1;
                report.stored_bytes += stored.len() as u64;
            }
        }
    }
    let tail = ImageTail {
        summary: last.meta.summary.clone(),
        max_data_seq: last.meta.max_data_seq,
        max_snapshot_seq: last.meta.max_snapshot_seq,
    };
    // Same reserved region and summary: the same content digest, checked before the
    // image gets its name.
    if image::content_digest(writer.header(), r.checksum, &tail.summary) != last.meta.content_digest {
        bail!("the merged content digest differs from the chain's; nothing written to {}", out.display());
    }
    writer.finish(&tail)?;
    report.images = chain.images.len();
    Ok(report)
}

#[derive(Debug, Default)]
pub struct MergeReport {
    pub images: usize,
    pub blocks: u64,
    pub stored_bytes: u64,
}
