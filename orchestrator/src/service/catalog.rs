//! The workflows an orchestrator knows, by name, and the parsed definitions of running runs
//! (a run keeps the file it started with, even if the folder changed since).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::workflow::{self, Loaded, Problem, Workflow, WorkflowError};

/// A run's stored workflow no longer parses (it cannot be advanced).
#[derive(Debug, thiserror::Error)]
#[error("the run's workflow definition is invalid: {0}")]
pub struct DefinitionError(String);

/// Workflows by name, and a cache of definitions by their text.
#[derive(Debug)]
pub struct Catalog {
    by_name: BTreeMap<String, (Arc<Workflow>, String)>,
    parsed: Mutex<HashMap<u64, Arc<Workflow>>>,
}

impl Catalog {
    /// Loads and validates every workflow under `dir`; every problem of every file is
    /// returned, as is a name used by two files.
    pub fn load(dir: &Path, roles: &[String]) -> Result<Self, Vec<WorkflowError>> {
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let mut by_name = BTreeMap::new();
        for Loaded { workflow, source } in workflow::load_dir(dir, &roles)? {
            let name = workflow.name.clone();
            if by_name
                .insert(name.clone(), (Arc::new(workflow), source))
                .is_some()
            {
                return Err(vec![WorkflowError {
                    file: dir.to_owned(),
                    step: None,
                    problem: Problem::Syntax(format!("two files define the workflow `{name}`")),
                }]);
            }
        }
        Ok(Self {
            by_name,
            parsed: Mutex::new(HashMap::new()),
        })
    }

    /// The workflow called `name` and its text.
    pub fn get(&self, name: &str) -> Option<(Arc<Workflow>, &str)> {
        self.by_name
            .get(name)
            .map(|(w, source)| (Arc::clone(w), source.as_str()))
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// The workflow a run started with, parsed from the text it stored.
    pub fn definition(&self, name: &str, source: &str) -> Result<Arc<Workflow>, DefinitionError> {
        let mut hasher = DefaultHasher::new();
        source.hash(&mut hasher);
        let key = hasher.finish();
        if let Some(found) = self.cached(key) {
            return Ok(found);
        }
        let parsed = workflow::parse(Path::new(name), source, &[]).map_err(|errors| {
            let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
            DefinitionError(problems.join("; "))
        })?;
        let parsed = Arc::new(parsed);
        if let Ok(mut cache) = self.parsed.lock() {
            cache.insert(key, Arc::clone(&parsed));
        }
        Ok(parsed)
    }

    fn cached(&self, key: u64) -> Option<Arc<Workflow>> {
        self.parsed.lock().ok()?.get(&key).cloned()
    }
}
