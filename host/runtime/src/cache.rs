//! Compiled components on disk, keyed by the component's sha256 and the engine's
//! compatibility hash.
//!
//! A file is `MAGIC`, the sha256 of the artefact, then the artefact (wasmtime's serialized
//! component). The digest is checked before wasmtime sees the bytes, so a truncated or
//! damaged file is recompiled instead of loaded. The cache directory must be trusted: a file
//! crafted by someone who can write to it runs as native code.

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

const MAGIC: &[u8; 16] = b"loyalty-cwasm-1\n";
const DIGEST_BYTES: usize = 32;

/// The on-disk cache of one engine.
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_hash: String,
}

/// What looking in the cache found.
pub(crate) enum Lookup {
    /// A usable artefact.
    Hit(Component),
    /// No file.
    Miss,
    /// A file that could not be used (damaged, or refused by wasmtime); the string says why.
    Unusable(String),
}

impl DiskCache {
    pub(crate) fn new(dir: PathBuf, engine_hash: String) -> std::io::Result<DiskCache> {
        fs::create_dir_all(&dir)?;
        Ok(DiskCache { dir, engine_hash })
    }

    /// The file for the component with this sha256 (hex).
    pub(crate) fn path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", self.engine_hash))
    }

    pub(crate) fn get(&self, engine: &Engine, sha256: &str) -> Lookup {
        let path = self.path(sha256);
        let file = match fs::read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Unusable(format!("{}: {e}", path.display())),
        };
        let Some(artefact) = verified_artefact(&file) else {
            return Lookup::Unusable(format!("{}: damaged (digest mismatch)", path.display()));
        };
        // SAFETY: the artefact was written by `put` from `Component::serialize` of an engine
        // with the same compatibility hash (it is in the file name), and its digest matches,
        // so these are the bytes wasmtime produced. wasmtime checks its own header and the
        // engine's settings again.
        match unsafe { Component::deserialize(engine, artefact) } {
            Ok(component) => Lookup::Hit(component),
            Err(e) => Lookup::Unusable(format!("{}: {e}", path.display())),
        }
    }

    /// Writes `component`'s artefact atomically (a temporary file renamed into place).
    pub(crate) fn put(&self, sha256: &str, component: &Component) -> Result<(), String> {
        let artefact = component.serialize().map_err(|e| format!("{e:#}"))?;
        let path = self.path(sha256);
        let temporary = self.dir.join(format!(
            ".{sha256}-{}.{}.tmp",
            self.engine_hash,
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&temporary)?;
            file.write_all(MAGIC)?;
            file.write_all(&Sha256::digest(&artefact))?;
            file.write_all(&artefact)?;
            file.sync_all()?;
            fs::rename(&temporary, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temporary);
            format!("{}: {e}", path.display())
        })
    }
}

fn verified_artefact(file: &[u8]) -> Option<&[u8]> {
    let rest = file.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < DIGEST_BYTES {
        return None;
    }
    let (digest, artefact) = rest.split_at(DIGEST_BYTES);
    (Sha256::digest(artefact).as_slice() == digest).then_some(artefact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_files_are_not_verified() {
        let artefact = b"artefact bytes";
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(artefact));
        file.extend_from_slice(artefact);
        assert_eq!(verified_artefact(&file), Some(&artefact[..]));
        let last = file.len() - 1;
        file[last] ^= 1;
        assert_eq!(verified_artefact(&file), None);
        assert_eq!(verified_artefact(&file[..20]), None);
        assert_eq!(verified_artefact(b"garbage"), None);
    }
}
