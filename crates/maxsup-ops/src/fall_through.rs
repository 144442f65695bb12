//! Trying ranked alternatives in turn until one runs: the convolutions' cuDNN algorithms, where
//! the best-ranked one may still fail at launch (a workspace that cannot be allocated, an
//! algorithm cuDNN refuses for the shape), as PyTorch falls through its list.

/// The first entry of `lists` (read in order, each distinct entry tried once) for which
/// `attempt` succeeds; otherwise every entry tried with why it failed (empty if there was none).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn first_that_runs<C: PartialEq + Copy, E: std::fmt::Display>(
    lists: impl IntoIterator<Item = Vec<C>>,
    mut attempt: impl FnMut(C) -> Result<(), E>,
) -> Result<C, Vec<(C, String)>> {
    let mut tried: Vec<C> = Vec::new();
    let mut failures = Vec::new();
    for c in lists.into_iter().flatten() {
        if tried.contains(&c) {
            continue;
        }
        tried.push(c);
        match attempt(c) {
            Ok(()) => return Ok(c),
            Err(e) => failures.push((c, e.to_string())),
        }
    }
    Err(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_through_in_order_and_tries_each_entry_once() {
        let mut tried = Vec::new();
        let got = first_that_runs([vec![3, 1], vec![1, 4, 5]], |c| {
            tried.push(c);
            if c == 4 {
                Ok(())
            } else {
                Err(format!("{c} refused"))
            }
        });
        assert_eq!(got, Ok(4));
        assert_eq!(tried, [3, 1, 4], "1 tried once, 5 never");
    }

    #[test]
    fn reports_every_failure_or_none_for_empty_lists() {
        let got = first_that_runs([vec![2, 7]], |c| Err::<(), _>(format!("no {c}")));
        assert_eq!(got, Err(vec![(2, "no 2".into()), (7, "no 7".into())]));
        let none = first_that_runs(Vec::<Vec<u8>>::new(), |_| Ok::<(), String>(()));
        assert_eq!(none, Err(vec![]));
    }
}
