//! Stricter JSON shapes for configuration types.
//!
//! serde's derived `Deserialize` for a struct also accepts a JSON array of the field values
//! (`[2, "up"]` for `{"points": 2, "rounding": "up"}`), which no configuration schema means.
//! [`Context::config`](crate::Context::config) therefore requires the top level to be an
//! object; for nested structs use these with `#[serde(deserialize_with = "…")]`:
//!
//! ```
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Config {
//!     #[serde(default, deserialize_with = "loyalty_sdk::json::optional_object")]
//!     member_day: Option<MemberDay>,
//! }
//!
//! #[derive(Deserialize)]
//! struct MemberDay {
//!     weekday: u8,
//! }
//!
//! assert!(loyalty_sdk::parse_config::<Config>(r#"{"member_day": {"weekday": 1}}"#).is_ok());
//! assert!(loyalty_sdk::parse_config::<Config>(r#"{"member_day": null}"#).is_ok());
//! assert!(loyalty_sdk::parse_config::<Config>(r#"{"member_day": [1]}"#).is_err());
//! ```

use core::fmt;
use core::marker::PhantomData;

use serde::de::{value::MapAccessDeserializer, Deserialize, Deserializer, MapAccess, Visitor};

/// `T` read only from a JSON object (a map), never from an array.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_map(ObjectVisitor(PhantomData))
}

/// Like [`object`] for an optional field: `null` is `None`.
pub fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Object<T>>::deserialize(deserializer)?.map(|o| o.0))
}

/// A `T` deserialized through [`object`].
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        object(deserializer).map(Object)
    }
}

/// Accepts a map only, and hands it to `T`'s own `Deserialize` (which keeps its checks:
/// unknown and duplicate fields, types).
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}
