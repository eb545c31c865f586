//! One shared copy of the short strings that repeat across cached objects (class names,
//! namespaces): 64,512 HostPorts of one class in a few namespaces hold a pointer each to a
//! handful of strings instead of 129,024 strings of their own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The strings handed out, and when to drop those nobody holds any more.
struct Table {
    strings: HashSet<Arc<str>>,
    prune_at: usize,
}

/// Fewest strings before the table looks for unused ones.
const MIN_PRUNE_AT: usize = 64;

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        Mutex::new(Table {
            strings: HashSet::new(),
            prune_at: MIN_PRUNE_AT,
        })
    })
}

/// The shared copy of `text`. Strings no object holds any more leave the table as it grows
/// (each time it doubles), so deleted namespaces do not stay forever.
pub fn intern(text: &str) -> Arc<str> {
    // A panic while the table was held leaves a valid set (each change is one insert or
    // one `retain`).
    let mut table = table().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = table.strings.get(text) {
        return shared.clone();
    }
    if table.strings.len() >= table.prune_at {
        table.strings.retain(|s| Arc::strong_count(s) > 1);
        table.prune_at = (table.strings.len() * 2).max(MIN_PRUNE_AT);
    }
    let shared: Arc<str> = text.into();
    table.strings.insert(shared.clone());
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let a = intern("intern-test-games");
        let b = intern(&String::from("intern-test-games"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "intern-test-games");
        assert!(!Arc::ptr_eq(&a, &intern("intern-test-other")));
    }

    #[test]
    fn strings_nobody_holds_leave_as_the_table_grows() {
        let held = intern("intern-test-held");
        for i in 0..10 * MIN_PRUNE_AT {
            drop(intern(&format!("intern-test-dropped-{i}")));
        }
        let table = table().lock().unwrap_or_else(PoisonError::into_inner);
        assert!(table.strings.contains("intern-test-held"));
        assert!(
            table.strings.len() < 4 * MIN_PRUNE_AT,
            "{}",
            table.strings.len()
        );
        drop(table);
        assert_eq!(&*held, "intern-test-held");
    }
}
