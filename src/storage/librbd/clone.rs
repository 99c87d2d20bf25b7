//! Cloning a snapshot of an image: [`Pool::clone_image`].
//!
//! librbd's `rbd_clone3` opens the parent and the new child as whole images to make a clone:
//! 43 operations one after the other, and three private copies of Ceph's configuration, about
//! 15 ms of the client's CPU per clone (docs/src/developers/benchmarks.md), which made
//! CreateServer on RBD slower than on files. A clone is a few small objects, so for the images
//! this storage makes (format 2, the default features, a protected snapshot, no image
//! metadata) they are written here with the `rbd` object class's methods, as librbd's own
//! `CloneRequest` writes them, in ten operations and a tenth of the CPU:
//!
//! 1. the parent's id, from the pool's directory;
//! 2. its header: snapshots, order, features, and whether it has metadata (to be copied);
//! 3. its snapshots: the one named, its size, and that it is protected;
//! 4. the child's entry in the directory (which fails if the name is taken), its id object,
//!    its header (size, order, the parent's features, the prefix of its data objects), its
//!    object map (every object absent: reads go to the parent), its parent, and its entry
//!    under the parent's snapshot in `rbd_children` (a format 1 clone, as librbd makes on a
//!    cluster that allows luminous clients: the snapshot cannot be unprotected, and so the
//!    parent cannot be removed, while a clone stands on it);
//! 5. the snapshot's protection read again, as librbd does: an unprotect that began before
//!    the child's entry was written would not have seen it.
//!
//! `rbd info`, `rbd children`, `rbd object-map check`, flatten and removal find what librbd's
//! clone would have made (the test `rbd_clones::`). Anything else goes to librbd: a parent
//! with other features (striping, a data pool, journaling), metadata, or snapshots of other
//! namespaces, settings that change how librbd clones (a default data pool, striping or
//! clone format, in the client's configuration or the pool's), and any answer this code does
//! not read. A clone that fails half way is undone, object by object, in reverse.

use super::cls::{
    Decoder, Encoder, NO_SNAPSHOT, OBJECT_NONEXISTENT, PROTECTED, Snapshot, USER_SNAPSHOT,
    child_entry, parent_spec, snapshot_ids,
};
use super::objects::rbd;
use super::{Error, Pool, Result};

const LAYERING: u64 = 1;
const OBJECT_MAP: u64 = 8;
/// Features a clone made here may have: layering, exclusive-lock, object-map, fast-diff and
/// deep-flatten (the default, `rbd_default_features` 61). None adds objects beyond those
/// written here.
const FEATURES_CLONED_HERE: u64 = LAYERING | 4 | OBJECT_MAP | 16 | 32;
/// librbd's limit on an image id, so that `rbd_data.<id>` fits its block name.
const MAX_IMAGE_ID: usize = 14;
/// The pool's directory of image names and ids.
const DIRECTORY: &str = "rbd_directory";
/// The pool's record of format 1 clones by parent snapshot.
const CHILDREN: &str = "rbd_children";
/// The pool's own object, whose metadata holds the pool's librbd settings.
const POOL_INFO: &str = "rbd_info";
/// Settings under which librbd would clone other than here.
const SETTINGS: [(&str, &[&str]); 4] = [
    ("rbd_default_data_pool", &[""]),
    ("rbd_default_stripe_unit", &["0"]),
    ("rbd_default_stripe_count", &["0"]),
    ("rbd_default_clone_format", &["auto", "1"]),
];

/// What a clone of a snapshot is made of, read from its parent.
struct Plan {
    parent_id: String,
    snapshot_id: u64,
    size: u64,
    order: u8,
    features: u64,
}

/// The objects a clone has made so far, undone in reverse when a later step fails.
enum Made {
    DirectoryEntry,
    IdObject,
    Header,
    ObjectMap,
    ChildEntry,
}

impl Pool {
    /// A clone `child` of `parent@snapshot`, in this pool (the snapshot protected).
    pub fn clone_image(&self, parent: &str, snapshot: &str, child: &str) -> Result<()> {
        if !self.clones_by_objects() {
            return self.clone_with_librbd(parent, snapshot, child);
        }
        match self.plan_clone(parent, snapshot)? {
            Some(plan) => self.make_clone(&plan, child),
            None => self.clone_with_librbd(parent, snapshot, child),
        }
    }

    /// Whether the client's and the pool's settings leave clones as they are made here.
    fn clones_by_objects(&self) -> bool {
        *self.clones_by_objects.get_or_init(|| {
            let decided = self.librbd_settings_allow_clones_here();
            if let Err(why) = &decided {
                tracing::info!("RBD clones are made by librbd: {why}");
            }
            decided.is_ok()
        })
    }

    fn librbd_settings_allow_clones_here(&self) -> std::result::Result<(), String> {
        for (option, usual) in SETTINGS {
            let value = self.cluster().conf_get(option).map_err(|e| e.to_string())?;
            if !usual.contains(&value.as_str()) {
                return Err(format!("{option} is {value:?}"));
            }
        }
        // Settings `rbd config pool set` gave the pool: keys `conf_<option>`.
        let list = rbd(
            "metadata_list",
            Encoder::new().str("conf_").u64(1024).finish(),
        );
        let answer = match self.read_object(POOL_INFO, &[list]) {
            Ok(mut answers) => answers.remove(0),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let mut d = Decoder::new(&answer);
        let count = d.u32().map_err(|_| "the pool's settings are unreadable")?;
        for _ in 0..count {
            let key = d
                .string()
                .map_err(|_| "the pool's settings are unreadable")?;
            let value = d
                .bytes()
                .map_err(|_| "the pool's settings are unreadable")?;
            let value = String::from_utf8_lossy(value);
            if let Some((option, usual)) = SETTINGS
                .iter()
                .find(|(option, _)| key.strip_prefix("conf_") == Some(option))
                && !usual.contains(&value.as_ref())
            {
                return Err(format!("the pool sets {option} to {value:?}"));
            }
        }
        Ok(())
    }

    /// Reads what a clone of `parent@snapshot` is made of: `None` if librbd should make it.
    fn plan_clone(&self, parent: &str, snapshot: &str) -> Result<Option<Plan>> {
        let Ok(answers) = self.read_object(
            DIRECTORY,
            &[rbd("dir_get_id", Encoder::new().str(parent).finish())],
        ) else {
            return Ok(None); // librbd answers for a missing parent, or an old-format one
        };
        let Ok(parent_id) = Decoder::new(&answers[0]).string() else {
            return Ok(None);
        };
        let header = header_object(&parent_id);
        let Ok(answers) = self.read_object(
            &header,
            &[
                rbd("get_snapcontext", Vec::new()),
                rbd("get_size", Encoder::new().u64(NO_SNAPSHOT).finish()),
                rbd(
                    "get_features",
                    Encoder::new().u64(NO_SNAPSHOT).bool(true).finish(),
                ),
                rbd("metadata_list", Encoder::new().str("").u64(1).finish()),
            ],
        ) else {
            return Ok(None);
        };
        let head = (|| {
            let ids = snapshot_ids(&answers[0])?;
            let order = Decoder::new(&answers[1]).u8()?;
            let features = Decoder::new(&answers[2]).u64()?;
            let metadata = Decoder::new(&answers[3]).u32()?;
            Ok::<_, super::cls::Undecodable>((ids, order, features, metadata))
        })();
        let Ok((ids, order, features, metadata)) = head else {
            return Ok(None);
        };
        if features & LAYERING == 0 || features & !FEATURES_CLONED_HERE != 0 || metadata != 0 {
            return Ok(None);
        }
        if ids.is_empty() {
            return Err(no_snapshot(parent, snapshot));
        }
        // Each snapshot and its protection, in one operation.
        let calls: Vec<_> = ids
            .iter()
            .flat_map(|&id| {
                [
                    rbd("snapshot_get", Encoder::new().u64(id).finish()),
                    rbd("get_protection_status", Encoder::new().u64(id).finish()),
                ]
            })
            .collect();
        let Ok(answers) = self.read_object(&header, &calls) else {
            return Ok(None); // a snapshot removed meanwhile, say
        };
        for pair in answers.chunks(2) {
            let Ok(found) = Snapshot::decode(&pair[0]) else {
                return Ok(None);
            };
            if found.name != snapshot {
                continue;
            }
            let protected = Decoder::new(&pair[1]).u8() == Ok(PROTECTED);
            if found.namespace != USER_SNAPSHOT || !protected {
                return Ok(None); // librbd's answer: it must be protected
            }
            return Ok(Some(Plan {
                parent_id,
                snapshot_id: found.id,
                size: found.size,
                order,
                features,
            }));
        }
        Err(no_snapshot(parent, snapshot))
    }

    /// Writes clone `child` of `plan`, or undoes what it wrote and fails.
    fn make_clone(&self, plan: &Plan, child: &str) -> Result<()> {
        let id = self.new_image_id();
        let mut made = Vec::new();
        let result = self.write_clone(plan, child, &id, &mut made);
        if result.is_err() {
            for step in made.iter().rev() {
                if let Err(e) = self.undo(step, plan, child, &id) {
                    // The orphan sweep removes what the directory still names.
                    tracing::warn!(image = child, "undoing a failed clone: {e}");
                }
            }
        }
        result
    }

    fn write_clone(&self, plan: &Plan, child: &str, id: &str, made: &mut Vec<Made>) -> Result<()> {
        let header = header_object(id);
        let enc = Encoder::new;
        self.write_object(
            DIRECTORY,
            false,
            &[rbd("dir_add_image", enc().str(child).str(id).finish())],
        )?;
        made.push(Made::DirectoryEntry);
        self.write_object(
            &format!("rbd_id.{child}"),
            true,
            &[rbd("set_id", enc().str(id).finish())],
        )?;
        made.push(Made::IdObject);
        let create = enc()
            .u64(plan.size)
            .u8(plan.order)
            .u64(plan.features)
            .str(&format!("rbd_data.{id}"))
            .i64(-1) // no data pool
            .finish();
        self.write_object(&header, true, &[rbd("create", create)])?;
        made.push(Made::Header);
        if plan.features & OBJECT_MAP != 0 {
            let objects = plan.size.div_ceil(1u64 << plan.order);
            let resize = enc().u64(objects).u8(OBJECT_NONEXISTENT).finish();
            self.write_object(
                &format!("rbd_object_map.{id}"),
                false,
                &[rbd("object_map_resize", resize)],
            )?;
            made.push(Made::ObjectMap);
        }
        let attach = parent_spec(self.id(), &plan.parent_id, plan.snapshot_id)
            .u64(plan.size) // the overlap: all of it
            .bool(false) // not a reattach
            .finish();
        self.write_object(&header, false, &[rbd("parent_attach", attach)])?;
        let entry = child_entry(self.id(), &plan.parent_id, plan.snapshot_id, id);
        self.write_object(CHILDREN, false, &[rbd("add_child", entry)])?;
        made.push(Made::ChildEntry);
        let status = self.read_object(
            &header_object(&plan.parent_id),
            &[rbd(
                "get_protection_status",
                Encoder::new().u64(plan.snapshot_id).finish(),
            )],
        )?;
        if Decoder::new(&status[0]).u8() != Ok(PROTECTED) {
            // librbd's answer when the snapshot is unprotected under a clone being made.
            return Err(Error::new("rbd_clone", child, -i64::from(libc::EINVAL)));
        }
        Ok(())
    }

    fn undo(&self, step: &Made, plan: &Plan, child: &str, id: &str) -> Result<()> {
        match step {
            Made::DirectoryEntry => self.write_object(
                DIRECTORY,
                false,
                &[rbd(
                    "dir_remove_image",
                    Encoder::new().str(child).str(id).finish(),
                )],
            ),
            Made::IdObject => self.remove_object(&format!("rbd_id.{child}")),
            Made::Header => self.remove_object(&header_object(id)),
            Made::ObjectMap => self.remove_object(&format!("rbd_object_map.{id}")),
            Made::ChildEntry => {
                let entry = child_entry(self.id(), &plan.parent_id, plan.snapshot_id, id);
                self.write_object(CHILDREN, false, &[rbd("remove_child", entry)])
            }
        }
    }

    /// A new image id as librbd makes them: this client's instance id and 32 random bits, in
    /// hexadecimal.
    fn new_image_id(&self) -> String {
        let id = format!(
            "{:x}{:x}",
            self.cluster().instance_id(),
            rand::random::<u32>()
        );
        id[id.len().saturating_sub(MAX_IMAGE_ID)..].to_string()
    }
}

fn header_object(id: &str) -> String {
    format!("rbd_header.{id}")
}

/// librbd's answer for a snapshot the parent does not have.
fn no_snapshot(parent: &str, snapshot: &str) -> Error {
    Error::new(
        "rbd_clone",
        &format!("{parent}@{snapshot}"),
        -i64::from(libc::ENOENT),
    )
}
