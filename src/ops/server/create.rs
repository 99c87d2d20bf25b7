//! CreateServer: a server, its boot disk from the image and its blank disks, in one go.

use super::*;

/// A random first-boot password: 16 characters, without look-alikes (0/O, 1/l/I).
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..16)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub async fn create_server(ctx: &Ctx, a: args::CreateServer) -> ApiResult<Server> {
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
    // Check everything before making any storage.
    let (server_offer, disk_offers, source) = {
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
            disk_offers
                .push(product_offer::offer_of_kind(&mut conn, *id, "disk", &argument).await?);
        }
        let source =
            disk::disk_source(&mut conn, ctx, a.image_id, disk_offers[0].disk_size).await?;
        let need = Need {
            servers: 1,
            storage_bytes: disk_offers.iter().map(|o| o.disk_size).sum(),
            ..Need::default()
        };
        quota::precheck(&mut conn, &ctx.state, customer_id, need).await?;
        (server_offer, disk_offers, source)
    };

    // Storage: the boot disk from the image, then blank disks.
    let mut made = Vec::new();
    let mut provisioned = async {
        made.push(disk::provision_volume(&ctx.state, &source, disk_offers[0].disk_size).await?);
        let blank = disk::DiskSource {
            image: None,
            backing: None,
        };
        for offer in &disk_offers[1..] {
            made.push(disk::provision_volume(&ctx.state, &blank, offer.disk_size).await?);
        }
        Ok::<_, ApiError>(())
    }
    .await;

    let image = source.image.as_ref();
    let mut server_id = 0;
    if provisioned.is_ok() {
        provisioned = async {
            let mut tx = ctx.state.db.begin_write().await?;
            let need = Need {
                servers: 1,
                storage_bytes: made.iter().map(|v| v.size as i64).sum(),
                ..Need::default()
            };
            quota::ensure_room(&mut tx, &ctx.state, customer_id, need).await?;
            server_id = sqlx::query_scalar(
                "INSERT INTO servers (uuid, customer_id, vdc_id, vlan_id, name, status, processors, \
                 memory, image_id, product_offer_id, initial_user, initial_password, created) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(customer_id)
            .bind(a.vdc_id)
            .bind((a.vlan_id != -1).then_some(a.vlan_id))
            .bind(&name)
            .bind(ServerStatus::Stopped.code())
            .bind(server_offer.processors)
            .bind(server_offer.memory)
            .bind(image.map(|i| i.id))
            .bind(server_offer.product_offer_id)
            .bind(image.and_then(|i| i.default_username.clone()))
            .bind(image.is_none_or(|i| i.generate_password != 0).then(generate_password))
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await?;
            if a.vlan_id != -1 {
                assign_address(&mut tx, &ctx.state, server_id, a.vlan_id).await?;
            }
            ssh_key::give_to_server(&mut tx, customer_id, server_id, ssh_key_ids).await?;
            for (index, (volume, offer)) in made.iter().zip(&disk_offers).enumerate() {
                let boot = index == 0;
                let backing = if boot { source.backing.as_ref().map(|b| b.id) } else { None };
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
                        media: if boot { image.map_or("disk", |i| i.media.as_str()) } else { "disk" },
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
                usage::record_image_use(&mut tx, customer_id, image, usage::ImageUser::Server(server_id))
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
    }
    if let Err(err) = provisioned {
        volumes::discard_uncommitted(ctx.state.storage.clone(), made, &err).await;
        return Err(err);
    }
    let mut conn = ctx.state.db.pool().acquire().await?;
    load_server(&mut conn, customer_id, server_id).await
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
