//! Checks on a component before and after compiling it.

use wasmtime::component::Component;
use wasmtime::Engine;

use crate::bindings::VERSIONS;
use crate::error::LoadError;
use crate::world::World;

/// The package every plugin interface belongs to.
const PACKAGE: &str = "loyalty:plugin";

/// Refuses what is not a component before compiling: too large, a core module, or not
/// WebAssembly at all.
pub(crate) fn check_bytes(bytes: &[u8], component_bytes_max: usize) -> Result<(), LoadError> {
    if bytes.len() > component_bytes_max {
        return Err(LoadError::TooLarge {
            bytes: bytes.len(),
            max: component_bytes_max,
        });
    }
    if !is_component(bytes) {
        return Err(LoadError::NotAComponent);
    }
    Ok(())
}

/// Whether `bytes` start with a component's header: the `\0asm` magic, then a version and a
/// layer of 1 (a core module's layer is 0).
fn is_component(bytes: &[u8]) -> bool {
    const MAGIC: &[u8; 4] = b"\0asm";
    const COMPONENT_LAYER: [u8; 2] = [1, 0];
    bytes.len() >= 8 && bytes[..4] == *MAGIC && bytes[6..8] == COMPONENT_LAYER
}

/// The world and WIT version a compiled component implements: it must export exactly one
/// plugin interface, at a version this host links, and import only that version's `types`
/// and `host` and `wasi:*` interfaces (whether the host provides each `wasi:*` one is checked
/// when the component is linked). Exports outside `loyalty:plugin` are ignored.
pub(crate) fn world_of(
    engine: &Engine,
    component: &Component,
) -> Result<(World, &'static str), LoadError> {
    let ty = component.component_type();
    let mut found: Vec<(World, &'static str)> = Vec::new();
    for (name, _) in ty.exports(engine) {
        let Some((interface, version)) = plugin_interface(name) else {
            continue;
        };
        let world = World::ALL
            .into_iter()
            .find(|world| world.export_interface() == interface)
            .ok_or_else(|| {
                LoadError::UnsupportedWorld(format!(
                    "it exports `{name}`, which is not a plugin world's interface"
                ))
            })?;
        let version = supported_version(version).ok_or_else(|| {
            LoadError::UnsupportedWorld(format!(
                "it exports `{name}`, but this host supports loyalty:plugin {}",
                VERSIONS.join(", ")
            ))
        })?;
        found.push((world, version));
    }
    let (world, version) = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(LoadError::UnsupportedWorld(
                "it exports no loyalty:plugin interface (earn, tiers, recommend or campaign)"
                    .into(),
            ))
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(world, _)| world.as_str()).collect();
            return Err(LoadError::UnsupportedWorld(format!(
                "it implements several worlds ({}); a plugin implements exactly one",
                names.join(", ")
            )));
        }
    };
    for (name, _) in ty.imports(engine) {
        if name.starts_with("wasi:") {
            continue;
        }
        match plugin_interface(name) {
            Some(("host" | "types", v)) if v == Some(version) => {}
            Some(("host" | "types", _)) => {
                return Err(LoadError::UnsupportedWorld(format!(
                "it imports `{name}` but exports loyalty:plugin@{version}; the versions must match"
            )))
            }
            _ => {
                return Err(LoadError::UnsupportedWorld(format!(
                    "it imports `{name}`, which the host does not provide (plugins may import \
                     only loyalty:plugin/host and wasi:*)"
                )))
            }
        }
    }
    Ok((world, version))
}

/// `("earn", Some("0.1.0"))` for `loyalty:plugin/earn@0.1.0`.
fn plugin_interface(name: &str) -> Option<(&str, Option<&str>)> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(match rest.split_once('@') {
        Some((interface, version)) => (interface, Some(version)),
        None => (rest, None),
    })
}

fn supported_version(version: Option<&str>) -> Option<&'static str> {
    let version = version?;
    VERSIONS
        .iter()
        .copied()
        .find(|supported| *supported == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_modules_and_garbage_are_not_components() {
        let core_module = b"\0asm\x01\0\0\0";
        assert_eq!(check_bytes(core_module, 100), Err(LoadError::NotAComponent));
        assert_eq!(check_bytes(b"hello", 100), Err(LoadError::NotAComponent));
        assert_eq!(
            check_bytes(&[0; 101], 100),
            Err(LoadError::TooLarge {
                bytes: 101,
                max: 100
            })
        );
        let empty_component = b"\0asm\x0d\0\x01\0";
        assert_eq!(check_bytes(empty_component, 100), Ok(()));
    }

    #[test]
    fn interface_names_parse() {
        assert_eq!(
            plugin_interface("loyalty:plugin/earn@0.1.0"),
            Some(("earn", Some("0.1.0")))
        );
        assert_eq!(
            plugin_interface("loyalty:plugin/host"),
            Some(("host", None))
        );
        assert_eq!(plugin_interface("wasi:cli/run@0.2.0"), None);
        assert_eq!(supported_version(Some("0.1.0")), Some("0.1.0"));
        assert_eq!(supported_version(Some("0.9.0")), None);
    }
}
