//! Key selectors: how a keyed operator and the hash partitioner get a record's key.
//!
//! A [`KeySelector`] lends the key to a closure, so a selector that can borrow the key from the
//! record ([`RefKey`], the API's `key_by_ref`) never copies it: hashing and state lookups use
//! the borrowed key, and the key is cloned only when a new key enters state. A selector that
//! computes the key ([`OwnedKey`], the API's `key_by`) builds it once per record.

use std::hash::Hash;
use std::marker::PhantomData;

/// What a key must be: hashable (key groups), comparable, cloneable into state.
pub trait Key:
    Hash + Eq + Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static
{
}

impl<K: Hash + Eq + Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static>
    Key for K
{
}

/// Extracts the key of a record.
pub trait KeySelector<T>: Clone + Send + Sync + 'static {
    /// The key type.
    type Key: Key;

    /// Calls `f` with the key of `record`, borrowed when the selector can.
    fn with_key<R>(&self, record: &T, f: impl FnOnce(&Self::Key) -> R) -> R;

    /// The key of `record`, owned.
    fn key(&self, record: &T) -> Self::Key;
}

/// A selector computing the key: `Fn(&T) -> K`.
pub struct OwnedKey<F, K> {
    f: F,
    _key: PhantomData<fn() -> K>,
}

impl<F, K> OwnedKey<F, K> {
    /// Wraps a function computing the key.
    pub fn new(f: F) -> Self {
        OwnedKey {
            f,
            _key: PhantomData,
        }
    }
}

impl<F: Clone, K> Clone for OwnedKey<F, K> {
    fn clone(&self) -> Self {
        OwnedKey::new(self.f.clone())
    }
}

impl<T, K, F> KeySelector<T> for OwnedKey<F, K>
where
    K: Key,
    F: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    type Key = K;

    #[inline]
    fn with_key<R>(&self, record: &T, f: impl FnOnce(&K) -> R) -> R {
        f(&(self.f)(record))
    }

    #[inline]
    fn key(&self, record: &T) -> K {
        (self.f)(record)
    }
}

/// A selector borrowing the key from the record: `for<'a> Fn(&'a T) -> &'a K`.
pub struct RefKey<F, K> {
    f: F,
    _key: PhantomData<fn() -> K>,
}

impl<F, K> RefKey<F, K> {
    /// Wraps a function returning a reference to the key inside the record.
    pub fn new(f: F) -> Self {
        RefKey {
            f,
            _key: PhantomData,
        }
    }
}

impl<F: Clone, K> Clone for RefKey<F, K> {
    fn clone(&self) -> Self {
        RefKey::new(self.f.clone())
    }
}

impl<T, K, F> KeySelector<T> for RefKey<F, K>
where
    K: Key,
    F: for<'a> Fn(&'a T) -> &'a K + Clone + Send + Sync + 'static,
{
    type Key = K;

    #[inline]
    fn with_key<R>(&self, record: &T, f: impl FnOnce(&K) -> R) -> R {
        f((self.f)(record))
    }

    #[inline]
    fn key(&self, record: &T) -> K {
        (self.f)(record).clone()
    }
}
