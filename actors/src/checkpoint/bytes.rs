//! Byte strings inside snapshots, written and read in one piece.
//!
//! serde treats a `Vec<u8>` as a sequence of `u8`, one call per byte. postcard writes
//! `serialize_bytes` with exactly the same bytes (a varint length, then the bytes), so these
//! helpers change nothing in the format, only the speed: a 121 MB checkpoint decodes in a
//! memory copy instead of a hundred million calls. Use them with `#[serde(with = "…")]`.

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use std::collections::BTreeMap;

/// Serializes a byte slice with `serialize_bytes`.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Deserializes a byte string (or, from formats without one, a sequence of bytes).
pub(crate) struct ByteBuf(pub(crate) Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        deserializer.deserialize_byte_buf(V)
    }
}

/// `#[serde(with = "bytes::vec")]` for a `Vec<u8>`.
pub(crate) mod vec {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        ByteBuf::deserialize(d).map(|b| b.0)
    }
}

/// `#[serde(with = "bytes::vec_of")]` for a `Vec<Vec<u8>>`.
pub(crate) mod vec_of {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| Bytes(b)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<ByteBuf>::deserialize(d).map(|v| v.into_iter().map(|b| b.0).collect())
    }
}

/// `#[serde(with = "bytes::tagged")]` for a `Vec<(T, Vec<u8>)>`.
pub(crate) mod tagged {
    use super::*;

    pub(crate) fn serialize<T: Serialize, S: Serializer>(
        v: &[(T, Vec<u8>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(t, b)| (t, Bytes(b))))
    }

    pub(crate) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(T, Vec<u8>)>, D::Error> {
        Vec::<(T, ByteBuf)>::deserialize(d).map(|v| v.into_iter().map(|(t, b)| (t, b.0)).collect())
    }
}

/// `#[serde(with = "bytes::map")]` for a `BTreeMap<K, Vec<u8>>`.
pub(crate) mod map {
    use super::*;

    pub(crate) fn serialize<K: Serialize, S: Serializer>(
        m: &BTreeMap<K, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, b)| (k, Bytes(b))))
    }

    pub(crate) fn deserialize<'de, K: Deserialize<'de> + Ord, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<K, Vec<u8>>, D::Error> {
        BTreeMap::<K, ByteBuf>::deserialize(d)
            .map(|m| m.into_iter().map(|(k, b)| (k, b.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Plain {
        a: Vec<u8>,
        b: Vec<Vec<u8>>,
        c: Vec<(usize, Vec<u8>)>,
        d: BTreeMap<u32, Vec<u8>>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Fast {
        #[serde(with = "vec")]
        a: Vec<u8>,
        #[serde(with = "vec_of")]
        b: Vec<Vec<u8>>,
        #[serde(with = "tagged")]
        c: Vec<(usize, Vec<u8>)>,
        #[serde(with = "map")]
        d: BTreeMap<u32, Vec<u8>>,
    }

    /// The helpers write the very bytes serde's default does, and read them back.
    #[test]
    fn same_bytes_as_the_default_encoding() {
        let big: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let plain = Plain {
            a: big.clone(),
            b: vec![vec![], big.clone()],
            c: vec![(3, big.clone())],
            d: [(1, vec![9]), (5, big.clone())].into_iter().collect(),
        };
        let fast = Fast {
            a: plain.a.clone(),
            b: plain.b.clone(),
            c: plain.c.clone(),
            d: plain.d.clone(),
        };
        let bytes = postcard::to_allocvec(&plain).unwrap();
        assert_eq!(postcard::to_allocvec(&fast).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Fast>(&bytes).unwrap(), fast);
    }
}
