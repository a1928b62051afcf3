//! Pools: the backends that serve one group of routes, each pool with the algorithm and the picker
//! state (cursor, smooth weights, generator) that choose among its members. Members are handles on the
//! same live state as the balancer's table, so a backend's figures are the same wherever it is seen.

use super::{Backend, Picker, Tried};
use crate::config::{Algorithm, Pool};
use crate::random::{Rng, mix64};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub(super) struct PoolPicker {
    pub(super) name: String,
    /// The pool's backends, in configuration order.
    pub(super) members: Vec<Arc<Backend>>,
    pub(super) picker: Picker,
}

impl PoolPicker {
    /// The member whose sticky id is `prefer` when it can take the request, else the algorithm's pick.
    pub(super) fn pick(
        &mut self,
        client: IpAddr,
        tried: Tried,
        prefer: Option<u64>,
    ) -> Option<Arc<Backend>> {
        if let Some(id) = prefer
            && let Some(sticky) = self
                .members
                .iter()
                .find(|b| b.sticky_id == id && b.available() && !tried.contains(b.slot))
        {
            return Some(sticky.clone());
        }
        let i = self.picker.pick(&self.members, client, tried)?;
        self.members.get(i).cloned()
    }
}

/// The pools of a configuration over the table's backends (`slot_of` gives a configured backend's
/// slot by its position in the flat list). A pool that was there before (same name) keeps its
/// generator and round-robin position; its smooth weights start again, as its members may have moved.
pub(super) fn build(
    pools: &[Pool],
    backends: &[Arc<Backend>],
    slot_of: &[usize],
    previous: &[PoolPicker],
    seed: &mut Rng,
) -> Vec<PoolPicker> {
    pools
        .iter()
        .map(|pool| {
            let members = pool
                .backends
                .clone()
                .filter_map(|position| slot_of.get(position))
                .filter_map(|&slot| backends.get(slot).cloned())
                .collect();
            let picker = match previous.iter().find(|p| p.name == pool.name) {
                Some(old) => old.picker.reconfigured(pool.algorithm),
                None => Picker::new(pool.algorithm, Rng::with_seed(mix64(seed.next_u64()))),
            };
            PoolPicker {
                name: pool.name.clone(),
                members,
                picker,
            }
        })
        .collect()
}

/// One pool holding every backend, in order: what a list of backends without pools means.
pub(super) fn single(name: &str, algorithm: Algorithm, count: usize) -> Vec<Pool> {
    vec![Pool {
        name: name.to_string(),
        algorithm,
        backends: 0..count,
        sticky_cookie: None,
    }]
}
