//! Deterministic module ordering: a topological sort on `depends_on`, ties
//! broken by name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::module::{Module, ModuleRegistration};
use crate::KernelError;

/// The modules of one application, in start order.
#[derive(Clone)]
pub struct ModuleRegistry {
    ordered: Vec<Arc<dyn Module>>,
}

impl std::fmt::Debug for ModuleRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl ModuleRegistry {
    /// Every module compiled into this binary (through `register_module!`).
    pub fn discover() -> Result<Self, KernelError> {
        Self::from_modules(
            inventory::iter::<ModuleRegistration>
                .into_iter()
                .map(|r| (r.factory)())
                .collect(),
        )
    }

    /// An explicit set of modules (tests, embedding).
    pub fn from_modules(modules: Vec<Arc<dyn Module>>) -> Result<Self, KernelError> {
        let mut by_name: BTreeMap<&'static str, Arc<dyn Module>> = BTreeMap::new();
        for m in modules {
            if by_name.insert(m.name(), m.clone()).is_some() {
                return Err(KernelError::DuplicateModule(m.name().to_string()));
            }
        }
        for m in by_name.values() {
            for dep in m.depends_on() {
                if !by_name.contains_key(dep) {
                    return Err(KernelError::MissingDependency {
                        module: m.name().to_string(),
                        dependency: dep.to_string(),
                    });
                }
            }
        }
        // Kahn's algorithm over a BTreeSet, so among ready modules the
        // alphabetically first always goes next.
        let mut remaining: BTreeMap<&'static str, BTreeSet<&'static str>> = by_name
            .values()
            .map(|m| (m.name(), m.depends_on().iter().copied().collect()))
            .collect();
        let mut ready: BTreeSet<&'static str> = remaining
            .iter()
            .filter(|(_, deps)| deps.is_empty())
            .map(|(n, _)| *n)
            .collect();
        let mut ordered = Vec::with_capacity(by_name.len());
        while let Some(next) = ready.pop_first() {
            remaining.remove(next);
            ordered.push(by_name[next].clone());
            for (name, deps) in remaining.iter_mut() {
                if deps.remove(next) && deps.is_empty() {
                    ready.insert(name);
                }
            }
        }
        if !remaining.is_empty() {
            return Err(KernelError::DependencyCycle(
                remaining.keys().map(|s| s.to_string()).collect(),
            ));
        }
        Ok(ModuleRegistry { ordered })
    }

    /// Modules in start order.
    pub fn modules(&self) -> &[Arc<dyn Module>] {
        &self.ordered
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.ordered.iter().map(|m| m.name()).collect()
    }

    /// Every module's migrations, modules in start order.
    pub fn migrations(&self) -> Result<Vec<atlas_db::Migration>, KernelError> {
        let mut all = Vec::new();
        for m in &self.ordered {
            let list = m.migrations().map_err(|source| KernelError::Migrations {
                module: m.name().to_string(),
                source,
            })?;
            all.extend(list);
        }
        Ok(all)
    }
}
