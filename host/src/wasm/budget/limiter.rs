//! The Store's resource limiter: each memory's own cap, then the budgets
//! of the Store's account.

use wasmtime::{ResourceLimiter, StoreLimits};

use super::{Account, TABLE_ELEMENT_BYTES};

/// A Store's resource limiter: each memory's own cap (`max_memory`, as
/// wasmtime's [`StoreLimits`] checks it, trapping past it), then the
/// budgets of the Store's [`Account`].
#[derive(Debug)]
pub struct Limiter {
    limits: StoreLimits,
    account: Account,
}

impl Limiter {
    /// `limits` for each memory, and `account` for all of them.
    pub fn new(limits: StoreLimits, account: Account) -> Self {
        Self { limits, account }
    }

    /// What the Store's instances hold against their budgets.
    pub fn account(&self) -> &Account {
        &self.account
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Asked again: the last growth succeeded (a failed one was told).
        self.account.memory_pending = 0;
        if !self.limits.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        let more = desired.saturating_sub(current) as u64;
        self.account.take(more).map_err(wasmtime::Error::new)?;
        self.account.memory_pending = more;
        Ok(true)
    }

    /// A growth failed: what was taken for it is given back. (wasmtime
    /// also says so of a growth past the memory type's own limit, before
    /// asking: what is given back then is the last growth, which did
    /// succeed; the failure traps, and the Store is dropped with its
    /// account, so the budgets never count more than the live accounts
    /// hold.)
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        let pending = std::mem::take(&mut self.account.memory_pending);
        self.account.give_back(pending);
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.account.table_pending = 0;
        if !self.limits.table_growing(current, desired, maximum)? {
            return Ok(false);
        }
        let more = (desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        self.account.take(more).map_err(wasmtime::Error::new)?;
        self.account.table_pending = more;
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        let pending = std::mem::take(&mut self.account.table_pending);
        self.account.give_back(pending);
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::wasm::budget::{Budget, Budgets, Which};

    fn budgets(service: u64, worker: &Arc<Budget>) -> Budgets {
        Budgets::new("s".into(), Budget::service(service), worker.clone())
    }

    /// A core module with `pages` of memory (of at most `max` pages, when
    /// given) and a function growing it, run on a Store whose limiter
    /// counts against `budgets`.
    fn store(
        budgets: &Budgets,
        pages: u32,
        max: Option<u32>,
    ) -> (
        wasmtime::Store<Limiter>,
        wasmtime::Result<wasmtime::Instance>,
    ) {
        let engine = wasmtime::Engine::default();
        let max = max.map_or(String::new(), |m| m.to_string());
        let wat = format!(
            r#"(module
                (memory (export "memory") {pages} {max})
                (table 10 funcref)
                (func (export "grow") (param i32) (result i32)
                    (memory.grow (local.get 0))))"#
        );
        let module = wasmtime::Module::new(&engine, wat).unwrap();
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(64 << 20)
            .trap_on_grow_failure(true)
            .build();
        let limiter = Limiter::new(limits, Account::new(budgets.clone()));
        let mut store = wasmtime::Store::new(&engine, limiter);
        store.limiter(|limiter| limiter);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]);
        (store, instance)
    }

    const PAGE: u64 = 64 << 10;
    const TABLE: u64 = 10 * TABLE_ELEMENT_BYTES;

    #[test]
    fn a_limiter_counts_growth_traps_past_a_budget_and_gives_all_back() {
        let worker = Budget::worker(1 << 30);
        let budgets = budgets(4 * PAGE + TABLE, &worker);
        let (mut store, instance) = store(&budgets, 2, None);
        let instance = instance.unwrap();
        // The initial memory and table are counted at instantiation.
        assert_eq!(budgets.service.held(), 2 * PAGE + TABLE);
        let grow = instance
            .get_typed_func::<i32, i32>(&mut store, "grow")
            .unwrap();
        // (pages asked, old size returned or a trap, then held)
        let steps: [(i32, Option<i32>, u64); 4] = [
            (1, Some(2), 3 * PAGE + TABLE),
            (0, Some(3), 3 * PAGE + TABLE),
            (1, Some(3), 4 * PAGE + TABLE),
            (1, None, 4 * PAGE + TABLE),
        ];
        for (i, (pages, want, held)) in steps.into_iter().enumerate() {
            match (grow.call(&mut store, pages), want) {
                (Ok(old), Some(want)) => assert_eq!(old, want, "step {i}"),
                (Err(trap), None) => {
                    let why = format!("{trap:#}");
                    assert_eq!(Which::named_in(&why), Some(Which::Service), "{why}");
                }
                (got, want) => panic!("step {i}: {got:?}, wanted {want:?}"),
            }
            assert_eq!(budgets.service.held(), held, "step {i}");
            assert_eq!(store.data().account().held(), held, "step {i}");
        }
        drop(store);
        assert_eq!((budgets.service.held(), worker.held()), (0, 0));
    }

    #[test]
    fn an_instance_whose_first_memory_does_not_fit_is_not_made() {
        let worker = Budget::worker(3 * PAGE);
        let budgets = budgets(1 << 30, &worker);
        let (first, made) = store(&budgets, 2, None);
        made.unwrap();
        let (second, refused) = store(&budgets, 2, None);
        let why = format!("{:#}", refused.unwrap_err());
        assert_eq!(Which::named_in(&why), Some(Which::Worker), "{why}");
        drop(second);
        // Nothing of the refused instance stays counted.
        assert_eq!(worker.held(), 2 * PAGE + TABLE);
        drop(first);
        assert_eq!(worker.held(), 0);
    }

    #[test]
    fn failed_growth_leaves_no_count_behind() {
        let worker = Budget::worker(1 << 30);
        let budgets = budgets(1 << 30, &worker);
        // A memory of at most 3 pages: growth past it fails after the
        // limiter allowed it (wasmtime checks the type's maximum), and
        // past 4 GiB before asking.
        for (max, grow_by) in [(Some(3), 2), (None, 65536)] {
            let (mut store, instance) = store(&budgets, 2, max);
            let instance = instance.unwrap();
            let grow = instance
                .get_typed_func::<i32, i32>(&mut store, "grow")
                .unwrap();
            assert_eq!(grow.call(&mut store, 1).unwrap(), 2);
            assert!(grow.call(&mut store, grow_by).is_err(), "{max:?}");
            assert!(budgets.service.held() <= 3 * PAGE + TABLE, "{max:?}");
            drop(store);
            assert_eq!((budgets.service.held(), worker.held()), (0, 0), "{max:?}");
        }
    }
}
