-- Customers' own quota limits (`extility customer set-quota`), in place of the platform's
-- defaults (`serve --quota-*`): one row per quota a customer has a limit of its own for.
-- `quota` is storage_bytes, servers, running_vcpus, running_memory_mb or concurrent_jobs;
-- `quota_limit` NULL means no limit. Written only by ops::quota.
CREATE TABLE customer_quotas (
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    quota       TEXT NOT NULL,
    quota_limit INTEGER,
    updated     INTEGER NOT NULL,
    PRIMARY KEY (customer_id, quota)
);
