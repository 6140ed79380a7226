//! An object: its attributes, where it lives, and its parsed key material
//! (computed once, on first use).
use crate::attrs::Attrs;
use crate::mechanisms::Material;
use crate::Rv;
use cryptoki_sys::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

/// Fresh handle for an object or session; never reused while loaded.
pub fn next_handle() -> CK_ULONG {
    NEXT_HANDLE.fetch_add(1, Ordering::Relaxed) as CK_ULONG
}

pub struct Object {
    pub handle: CK_OBJECT_HANDLE,
    pub attrs: Attrs,
    /// Session that owns a session object (None for token objects).
    pub owner: Option<CK_SESSION_HANDLE>,
    /// File id of a token object.
    pub file_id: Option<String>,
    /// Key material still sealed (public object loaded before any login).
    pub locked: bool,
    material: OnceLock<Rv<Arc<Material>>>,
}

impl Object {
    pub fn new(
        handle: CK_OBJECT_HANDLE,
        attrs: Attrs,
        owner: Option<CK_SESSION_HANDLE>,
        file_id: Option<String>,
        locked: bool,
    ) -> Object {
        Object {
            handle,
            attrs,
            owner,
            file_id,
            locked,
            material: OnceLock::new(),
        }
    }

    pub fn is_token(&self) -> bool {
        self.attrs.bool(CKA_TOKEN)
    }

    pub fn is_private(&self) -> bool {
        self.attrs.bool(CKA_PRIVATE)
    }

    /// Parsed key material; a locked object needs a login first.
    pub fn material(&self) -> Rv<Arc<Material>> {
        if self.locked {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        self.material
            .get_or_init(|| Material::from_attrs(&self.attrs).map(Arc::new))
            .clone()
    }

    /// Same object with new attributes (key material re-parsed lazily).
    pub fn with_attrs(&self, attrs: Attrs) -> Object {
        Object::new(self.handle, attrs, self.owner, self.file_id.clone(), self.locked)
    }
}
