//! CreateServer: a server, its boot disk from the image and its blank disks, in one go.

use super::*;
use crate::ops::storage::product_offer::ProductOffer;
use crate::storage::VolumeFile;

/// A random first-boot password: 16 characters, without look-alikes (0/O, 1/l/I).
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..16)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// What CreateServer checked before making anything.
struct Plan {
    name: String,
    server_offer: ProductOffer,
    /// The boot disk's offer first.
    disk_offers: Vec<ProductOffer>,
    /// What the boot disk is made from.
    source: disk::DiskSource,
}

/// CreateServer in three phases: [`validate_request`] (reads only), [`provision`] (the
/// volumes) and [`commit`] (the rows, in one transaction). One undo path: when provisioning or
/// the commit fails, the volumes made so far go (unless the database went away: a commit may
/// then have kept them, and the orphan sweep decides; `volumes::discard_uncommitted`).
pub async fn create_server(ctx: &Ctx, a: args::CreateServer) -> ApiResult<Server> {
    let plan = validate_request(ctx, &a).await?;
    let mut made = Vec::new();
    let committed = async {
        provision(&ctx.state, &plan, &mut made).await?;
        commit(ctx, &a, &plan, &made).await
    }
    .await;
    let server_id = match committed {
        Ok(server_id) => server_id,
        Err(err) => {
            volumes::discard_uncommitted(ctx.state.storage.clone(), made, &err).await;
            return Err(err);
        }
    };
    let mut conn = ctx.state.db.pool().acquire().await?;
    load_server(&mut conn, ctx.customer_id(), server_id).await
}

/// Checks everything before making any storage: the arguments, that the VDC, VLAN and SSH keys
/// are the caller's, the offers, the image, and that the quota has room (checked again in
/// the commit, where it counts).
async fn validate_request(ctx: &Ctx, a: &args::CreateServer) -> ApiResult<Plan> {
    let name = validate::name("server_name", &a.server_name)?;
    let customer_id = ctx.customer_id();
    if a.disk_productoffer_ids.is_empty() {
        return Err(ApiError::invalid(
            "disk_productoffer_ids",
            "must name at least one disk product offer (the boot disk)",
        ));
    }
    if a.disk_productoffer_ids.len() > 16 {
        return Err(ApiError::invalid(
            "disk_productoffer_ids",
            "may name at most 16 disk product offers",
        ));
    }
    let ssh_key_ids = a.ssh_key_ids.as_deref().unwrap_or_default();
    let mut conn = ctx.state.db.pool().acquire().await?;
    vdc::ensure_own(&mut conn, customer_id, a.vdc_id).await?;
    ssh_key::own_keys(&mut conn, customer_id, ssh_key_ids).await?;
    if a.vlan_id != -1 {
        let vlan: Option<i64> =
            sqlx::query_scalar("SELECT vdc_id FROM vlans WHERE id = $1 AND customer_id = $2")
                .bind(a.vlan_id)
                .bind(customer_id)
                .fetch_optional(&mut *conn)
                .await?;
        match vlan {
            None => return Err(ApiError::not_found("VLAN", a.vlan_id)),
            Some(vdc_id) if vdc_id != a.vdc_id => {
                return Err(ApiError::invalid(
                    "vlan_id",
                    format!(
                        "VLAN {} is in VDC {vdc_id}, not in VDC {}",
                        a.vlan_id, a.vdc_id
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let server_offer = product_offer::offer_of_kind(
        &mut conn,
        a.server_productoffer_id,
        "server",
        "server_productoffer_id",
    )
    .await?;
    let mut disk_offers = Vec::new();
    for (i, id) in a.disk_productoffer_ids.iter().enumerate() {
        let argument = format!("disk_productoffer_ids[{i}]");
        disk_offers.push(product_offer::offer_of_kind(&mut conn, *id, "disk", &argument).await?);
    }
    let source = disk::disk_source(&mut conn, ctx, a.image_id, disk_offers[0].disk_size).await?;
    let need = Need {
        servers: 1,
        storage_bytes: disk_offers.iter().map(|o| o.disk_size).sum(),
        ..Need::default()
    };
    quota::precheck(&mut conn, &ctx.state, customer_id, need).await?;
    Ok(Plan {
        name,
        server_offer,
        disk_offers,
        source,
    })
}

/// Makes the volumes: the boot disk from the image, then blank disks, into `made` (which the
/// undo path gives back if anything fails).
async fn provision(state: &AppState, plan: &Plan, made: &mut Vec<VolumeFile>) -> ApiResult<()> {
    let boot_size = plan.disk_offers[0].disk_size;
    made.push(disk::provision_volume(state, &plan.source, boot_size).await?);
    let blank = disk::DiskSource {
        image: None,
        backing: None,
    };
    for offer in &plan.disk_offers[1..] {
        made.push(disk::provision_volume(state, &blank, offer.disk_size).await?);
    }
    Ok(())
}

/// Makes the server visible in one transaction: the quota counted where it holds, the server's
/// row, its address, its SSH keys, its volumes and disks, and the usage of a billed image.
/// Returns the server's id.
async fn commit(
    ctx: &Ctx,
    a: &args::CreateServer,
    plan: &Plan,
    made: &[VolumeFile],
) -> ApiResult<i64> {
    let customer_id = ctx.customer_id();
    let (name, image) = (&plan.name, plan.source.image.as_ref());
    let mut tx = ctx.begin_write().await?;
    let need = Need {
        servers: 1,
        storage_bytes: made.iter().map(|v| v.size as i64).sum(),
        ..Need::default()
    };
    quota::ensure_room(&mut tx, &ctx.state, customer_id, need).await?;
    let server_id: i64 = sqlx::query_scalar(
        "INSERT INTO servers (uuid, customer_id, vdc_id, vlan_id, name, status, processors, \
         memory, image_id, product_offer_id, initial_user, initial_password, created) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(customer_id)
    .bind(a.vdc_id)
    .bind((a.vlan_id != -1).then_some(a.vlan_id))
    .bind(name)
    .bind(ServerStatus::Stopped.code())
    .bind(plan.server_offer.processors)
    .bind(plan.server_offer.memory)
    .bind(image.map(|i| i.id))
    .bind(plan.server_offer.product_offer_id)
    .bind(image.and_then(|i| i.default_username.clone()))
    .bind(
        image
            .is_none_or(|i| i.generate_password != 0)
            .then(generate_password),
    )
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await?;
    if a.vlan_id != -1 {
        assign_address(&mut tx, &ctx.state, server_id, a.vlan_id).await?;
    }
    let ssh_key_ids = a.ssh_key_ids.as_deref().unwrap_or_default();
    ssh_key::give_to_server(&mut tx, customer_id, server_id, ssh_key_ids).await?;
    for (index, (volume, offer)) in made.iter().zip(&plan.disk_offers).enumerate() {
        let boot = index == 0;
        let backing = if boot {
            plan.source.backing.as_ref().map(|b| b.id)
        } else {
            None
        };
        let volume_id = volumes::insert(&mut tx, volume, backing).await?;
        let disk_name = if boot {
            format!("{name} boot disk")
        } else {
            format!("{name} disk {}", index + 1)
        };
        disk::insert_disk(
            &mut tx,
            NewDisk {
                customer_id,
                vdc_id: a.vdc_id,
                name: &disk_name,
                capacity: volume.size as i64,
                media: if boot {
                    image.map_or("disk", |i| i.media.as_str())
                } else {
                    "disk"
                },
                volume_id,
                image_id: if boot { image.map(|i| i.id) } else { None },
                product_offer_id: Some(offer.product_offer_id),
                server_id: Some(server_id),
                attach_index: Some(index as i64),
                origin_server_id: Some(server_id),
                source_format: if boot {
                    image.and_then(|i| i.source_format.as_deref())
                } else {
                    None
                },
            },
        )
        .await?;
    }
    if let Some(image) = image {
        usage::record_image_use(
            &mut tx,
            customer_id,
            image,
            usage::ImageUser::Server(server_id),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(server_id)
}

/// Gives a server on a VLAN the first free address of the VLAN's subnet (the VLAN's row stays
/// locked until the transaction ends, so two servers never get one address).
async fn assign_address(
    conn: &mut AnyConnection,
    state: &AppState,
    server_id: i64,
    vlan_id: i64,
) -> ApiResult<()> {
    let subnet = vlan::lock_subnet(&mut *conn, state, vlan_id).await?;
    let taken: Vec<String> =
        sqlx::query_scalar("SELECT ipv4 FROM servers WHERE vlan_id = $1 AND ipv4 IS NOT NULL")
            .bind(vlan_id)
            .fetch_all(&mut *conn)
            .await?;
    let taken = taken.iter().filter_map(|a| a.parse().ok()).collect();
    let address = crate::network::addresses::free_address(subnet, &taken).ok_or_else(|| {
        ApiError::LimitExceeded(format!(
            "VLAN {vlan_id} ({subnet}) has no address left for another server"
        ))
    })?;
    sqlx::query("UPDATE servers SET ipv4 = $1 WHERE id = $2")
        .bind(address.to_string())
        .bind(server_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// At startup: servers on a VLAN made before addresses existed get theirs.
pub async fn assign_missing_addresses(state: &AppState) -> ApiResult<()> {
    let missing: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, vlan_id FROM servers WHERE vlan_id IS NOT NULL AND ipv4 IS NULL ORDER BY id",
    )
    .fetch_all(state.db.pool())
    .await?;
    for (server_id, vlan_id) in missing {
        let mut tx = state.db.begin_write().await?;
        assign_address(&mut tx, state, server_id, vlan_id).await?;
        tx.commit().await?;
    }
    Ok(())
}
