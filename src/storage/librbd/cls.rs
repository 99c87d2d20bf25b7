//! The arguments and answers of the `rbd` object class's methods (`cls_rbd`, run inside the
//! OSDs on an image's header and the pool's directory objects), in Ceph's encoding: integers
//! little-endian, a string or byte list as a `u32` length and its bytes, a versioned struct as
//! a version, the oldest version that can read it, and a `u32` length before its fields.
//!
//! These methods are the protocol between every librbd client and the OSDs; Ceph keeps each
//! one working for older clients, which is what lets [`super::clone`] call them itself.

/// `cls::rbd::SnapshotNamespace` of a snapshot an image's user took (not a group's, a
/// mirror's or the trash's).
pub const USER_SNAPSHOT: u32 = 0;
/// The protection state of a snapshot clones may be made from (`RBD_PROTECTION_STATUS_PROTECTED`).
pub const PROTECTED: u8 = 2;
/// An object map's state of an object that does not exist.
pub const OBJECT_NONEXISTENT: u8 = 0;
/// The snapshot id that names an image's head.
pub const NO_SNAPSHOT: u64 = u64::MAX - 1;

/// An argument being encoded.
#[derive(Default)]
pub struct Encoder(Vec<u8>);

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    pub fn u8(mut self, v: u8) -> Encoder {
        self.0.push(v);
        self
    }

    pub fn bool(self, v: bool) -> Encoder {
        self.u8(v as u8)
    }

    pub fn u64(mut self, v: u64) -> Encoder {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i64(mut self, v: i64) -> Encoder {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn str(mut self, v: &str) -> Encoder {
        let len = u32::try_from(v.len()).expect("a name under 4 GiB");
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(v.as_bytes());
        self
    }

    /// A struct of version 1 (readable by version 1) whose fields `fields` encodes.
    pub fn versioned(self, fields: Encoder) -> Encoder {
        let len = u32::try_from(fields.0.len()).expect("a struct under 4 GiB");
        let mut out = self.u8(1).u8(1);
        out.0.extend_from_slice(&len.to_le_bytes());
        out.0.extend_from_slice(&fields.0);
        out
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// An answer too short, or of a version this code cannot read.
#[derive(Debug, PartialEq, Eq)]
pub struct Undecodable;

/// An answer being decoded.
pub struct Decoder<'a>(&'a [u8]);

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder(bytes)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Undecodable> {
        if self.0.len() < n {
            return Err(Undecodable);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, Undecodable> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, Undecodable> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().map_err(|_| Undecodable)?))
    }

    pub fn u64(&mut self) -> Result<u64, Undecodable> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| Undecodable)?))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Undecodable> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub fn string(&mut self) -> Result<String, Undecodable> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Undecodable)
    }

    /// A versioned struct that version 1 can read: a decoder of its fields (later versions
    /// append fields, which the caller leaves unread).
    pub fn versioned(&mut self) -> Result<Decoder<'a>, Undecodable> {
        let _version = self.u8()?;
        let compatible = self.u8()?;
        if compatible > 1 {
            return Err(Undecodable);
        }
        Ok(Decoder(self.bytes()?))
    }
}

/// A snapshot as `snapshot_get` answers (`cls::rbd::SnapshotInfo`), the parts cloning reads.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: u64,
    pub name: String,
    /// Its namespace's type ([`USER_SNAPSHOT`] for a user's).
    pub namespace: u32,
    /// The image's size when it was taken: a clone's size.
    pub size: u64,
}

impl Snapshot {
    pub fn decode(answer: &[u8]) -> Result<Snapshot, Undecodable> {
        let mut info = Decoder::new(answer).versioned()?;
        let id = info.u64()?;
        let namespace = info.versioned()?.u32()?;
        let name = info.string()?;
        let size = info.u64()?;
        Ok(Snapshot {
            id,
            name,
            namespace,
            size,
        })
    }
}

/// `cls::rbd::ParentImageSpec`: a snapshot of an image of a pool (no namespace).
pub fn parent_spec(pool: i64, image_id: &str, snapshot_id: u64) -> Encoder {
    Encoder::new().versioned(
        Encoder::new()
            .i64(pool)
            .str("")
            .str(image_id)
            .u64(snapshot_id),
    )
}

/// `add_child` and `remove_child` on the pool's `rbd_children`: a format 1 clone's entry
/// under its parent's snapshot.
pub fn child_entry(pool: i64, parent_id: &str, snapshot_id: u64, child_id: &str) -> Vec<u8> {
    Encoder::new()
        .i64(pool)
        .str(parent_id)
        .u64(snapshot_id)
        .str(child_id)
        .finish()
}

/// `get_snapcontext`'s answer: the ids of an image's snapshots.
pub fn snapshot_ids(answer: &[u8]) -> Result<Vec<u64>, Undecodable> {
    let mut d = Decoder::new(answer);
    let _seq = d.u64()?;
    let count = d.u32()? as usize;
    if count > answer.len() / 8 {
        return Err(Undecodable);
    }
    (0..count).map(|_| d.u64()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes librbd 16.2 sent and an OSD of 16.2 answered, as its message log and a client
    /// of the class showed them.
    #[test]
    fn arguments_are_encoded_as_librbd_encodes_them() {
        // `create`: 50 bytes for a 21-character object prefix.
        let create = Encoder::new()
            .u64(1 << 30)
            .u8(22)
            .u64(61)
            .str("rbd_data.101972176b18")
            .i64(-1)
            .finish();
        assert_eq!(create.len(), 50);
        assert_eq!(&create[..13], &[0, 0, 0, 64, 0, 0, 0, 0, 22, 61, 0, 0, 0]);
        assert_eq!(&create[42..], &(-1i64).to_le_bytes());
        // `parent_attach`: the spec, the overlap and `reattach`, 51 bytes for a 12-character
        // image id.
        let attach = parent_spec(1, "1019bcada159", 30)
            .u64(1 << 30)
            .bool(false)
            .finish();
        assert_eq!(attach.len(), 51);
        assert_eq!(&attach[..6], &[1, 1, 36, 0, 0, 0]);
        // `add_child`: 48 bytes for two 12-character ids.
        assert_eq!(child_entry(1, "1019bcada159", 30, "101972176b18").len(), 48);
    }

    #[test]
    fn answers_are_decoded() {
        let snapshot = hex(
            "01012b0000001e0000000000000001010400000000000000010000007300000040000000000a54176b928fc61f00000000",
        );
        assert_eq!(
            Snapshot::decode(&snapshot),
            Ok(Snapshot {
                id: 30,
                name: "s".into(),
                namespace: USER_SNAPSHOT,
                size: 1 << 30,
            })
        );
        assert_eq!(
            snapshot_ids(&hex("1e00000000000000010000001e00000000000000")),
            Ok(vec![30])
        );
    }

    #[test]
    fn short_or_newer_answers_are_refused() {
        let snapshot = hex(
            "01012b0000001e0000000000000001010400000000000000010000007300000040000000000a54176b928fc61f00000000",
        );
        assert_eq!(Snapshot::decode(&snapshot[..20]), Err(Undecodable));
        let mut newer = snapshot.clone();
        newer[1] = 2; // readable only by version 2
        assert_eq!(Snapshot::decode(&newer), Err(Undecodable));
        assert_eq!(
            snapshot_ids(&hex("1e00000000000000ffffffff")),
            Err(Undecodable)
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
