//! Group commit: writes (runs' starts, appends and ends) that arrive while
//! another one is committing wait, and the next commit takes all of them,
//! so that concurrent runs share one transaction (its WAL frames, and with
//! `full` its fsync) instead of queueing for one each. It owns the queue and
//! who commits; what a write writes, and the SQL, are the journal's.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::JournalError;

/// What a committed write answers: `A` (for an append, whether a cancel
/// was requested), or why it was not written.
pub type Outcome<A = bool> = Result<A, JournalError>;

/// The most writes one transaction takes.
const MAX_BATCH: usize = 256;

/// Writes waiting for a commit, and whether one is being made; `A` is
/// what a committed write answers.
pub struct Group<T, A = bool> {
    state: Mutex<State<T, A>>,
    settled: Condvar,
}

struct State<T, A> {
    queue: Vec<Arc<Pending<T, A>>>,
    committing: bool,
}

/// One write in a batch: its work, and where its outcome goes.
pub struct Pending<T, A = bool> {
    /// What to write.
    pub work: T,
    outcome: Mutex<Option<Outcome<A>>>,
    /// Wakes the task that waits for it (settled, or first in the queue
    /// when a commit ends: its turn to commit).
    wake: tokio::sync::Notify,
}

impl<T, A> Pending<T, A> {
    /// A write not yet settled.
    pub fn new(work: T) -> Pending<T, A> {
        Pending {
            work,
            outcome: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Its outcome, once settled (an unsettled one is a storage error).
    pub fn outcome(&self) -> Outcome<A> {
        self.take().unwrap_or_else(|| {
            Err(JournalError::Storage(
                "the commit of this write did not finish".into(),
            ))
        })
    }

    /// Gives this write its outcome.
    pub fn settle(&self, outcome: Outcome<A>) {
        *lock(&self.outcome) = Some(outcome);
    }

    fn take(&self) -> Option<Outcome<A>> {
        lock(&self.outcome).take()
    }

    fn is_settled(&self) -> bool {
        lock(&self.outcome).is_some()
    }
}

impl<T, A> Default for Group<T, A> {
    fn default() -> Group<T, A> {
        Group {
            state: Mutex::new(State {
                queue: Vec::new(),
                committing: false,
            }),
            settled: Condvar::new(),
        }
    }
}

impl<T, A> Group<T, A> {
    /// Queues `work` and waits for its outcome. If no commit is under way,
    /// this thread makes one with `commit`, for everything queued; `commit`
    /// settles every write of the batch it is given.
    pub fn submit(&self, work: T, commit: impl Fn(&[Arc<Pending<T, A>>])) -> Outcome<A> {
        let pending = Arc::new(Pending::new(work));
        let mut state = lock(&self.state);
        state.queue.push(pending.clone());
        loop {
            if let Some(outcome) = pending.take() {
                return outcome;
            }
            if state.committing {
                state = self.spin_while_committing(state, &pending);
                if !state.committing || pending.is_settled() {
                    continue;
                }
                // One hand-off of the worker for the whole wait, however
                // many commits it takes (a waiter is woken by each).
                state = off_the_worker(|| {
                    let mut state = state;
                    while state.committing && !pending.is_settled() {
                        state = self
                            .settled
                            .wait(state)
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                    }
                    state
                });
                continue;
            }
            state.committing = true;
            // A bounded transaction: the rest waits for the next one.
            let take = state.queue.len().min(MAX_BATCH);
            let rest = state.queue.split_off(take);
            let batch = std::mem::replace(&mut state.queue, rest);
            drop(state);
            {
                // Even if `commit` panics, the batch is settled and the
                // next waiter may commit.
                let _done = Done {
                    group: self,
                    batch: &batch,
                };
                commit(&batch);
            }
            state = lock(&self.state);
        }
    }
}

impl<T, A> Group<T, A> {
    /// Queues `work` for the next commit; [`Queued::settled`] waits for its
    /// outcome. Writes queued one after the other commit in that order.
    pub fn enqueue(&self, work: T) -> Queued<'_, T, A> {
        let pending = Arc::new(Pending::new(work));
        lock(&self.state).queue.push(pending.clone());
        Queued {
            group: self,
            pending,
            answered: false,
        }
    }

    /// Waits for the commit under way by spinning, for at most
    /// [`spin_budget`].
    fn spin_while_committing<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<T, A>>,
        pending: &Pending<T, A>,
    ) -> MutexGuard<'a, State<T, A>> {
        let budget = spin_budget();
        if budget.is_zero() {
            return state;
        }
        let until = std::time::Instant::now() + budget;
        while state.committing && !pending.is_settled() && std::time::Instant::now() < until {
            drop(state);
            spin_a_little();
            state = lock(&self.state);
        }
        state
    }
}

/// A write in the queue, for a task to wait on ([`Queued::settled`]). If it
/// is dropped before its write is settled (never awaited, or its run's
/// task was aborted), the write leaves the queue, as if the process had
/// stopped before committing it, and the write first in the queue is woken
/// in its place: this one may have been woken to make the next commit,
/// which it will not make now.
pub struct Queued<'a, T, A = bool> {
    group: &'a Group<T, A>,
    pending: Arc<Pending<T, A>>,
    /// Its outcome was taken: nothing to undo.
    answered: bool,
}

impl<T, A> Queued<'_, T, A> {
    /// [`Group::submit`] for a task: waits for the write's outcome by
    /// yielding (its worker goes on with other tasks, which may queue more
    /// for the next commit), or, when no commit is under way, makes one
    /// here with `commit`, for everything queued.
    pub async fn settled(mut self, commit: impl Fn(&[Arc<Pending<T, A>>])) -> Outcome<A> {
        let group = self.group;
        loop {
            // Made before looking, so that a wake in between is kept.
            let woken = self.pending.wake.notified();
            if let Some(outcome) = self.pending.take() {
                self.answered = true;
                return outcome;
            }
            let batch = {
                let mut state = lock(&group.state);
                if state.committing {
                    None
                } else if state.queue.is_empty() {
                    // Settled since we looked: its outcome is there.
                    continue;
                } else {
                    state.committing = true;
                    let take = state.queue.len().min(MAX_BATCH);
                    let rest = state.queue.split_off(take);
                    Some(std::mem::replace(&mut state.queue, rest))
                }
            };
            match batch {
                None => woken.await,
                Some(batch) => {
                    let _done = Done {
                        group,
                        batch: &batch,
                    };
                    commit(&batch);
                }
            }
        }
    }
}

impl<T, A> Drop for Queued<'_, T, A> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut state = lock(&self.group.state);
        state
            .queue
            .retain(|queued| !Arc::ptr_eq(queued, &self.pending));
        if !state.committing
            && let Some(next) = state.queue.first()
        {
            next.wake.notify_one();
        }
    }
}

impl<T, A> Group<T, A> {
    /// Whether a commit is under way (for tests that wait for one).
    #[cfg(test)]
    pub fn committing(&self) -> bool {
        lock(&self.state).committing
    }

    /// How many writes wait in the queue (for tests that wait for them).
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        lock(&self.state).queue.len()
    }
}

/// Ends a commit: settles what it left unsettled, and wakes the waiters.
struct Done<'a, T, A> {
    group: &'a Group<T, A>,
    batch: &'a [Arc<Pending<T, A>>],
}

impl<T, A> Drop for Done<'_, T, A> {
    fn drop(&mut self) {
        for pending in self.batch {
            let mut outcome = lock(&pending.outcome);
            if outcome.is_none() {
                *outcome = Some(Err(JournalError::Storage(
                    "the commit of this write did not finish".into(),
                )));
            }
            drop(outcome);
            pending.wake.notify_one();
        }
        let mut state = lock(&self.group.state);
        state.committing = false;
        // The next commit is made by whoever waits first: a thread (woken
        // below) or the task first in the queue.
        if let Some(next) = state.queue.first() {
            next.wake.notify_one();
        }
        drop(state);
        self.group.settled.notify_all();
    }
}

/// Whether appends are group-committed and waits leave the worker: yes,
/// unless `WASAGA_GROUP_COMMIT=0` (each append then commits on its own and
/// waits block the worker: the benchmarks' baseline).
pub fn enabled() -> bool {
    static ENABLED: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        std::env::var("WASAGA_GROUP_COMMIT").map_or(true, |v| v != "0")
    });
    *ENABLED
}

/// How long a thread that finds a commit under way (or the state file's
/// connection in use) spins before it sleeps: 100 µs, or
/// `WASAGA_COMMIT_SPIN_US` (0: never, the benchmarks' baseline); never once
/// this process opened a state file whose commits wait for the disk.
///
/// Why: a commit that does not wait for the disk takes tens of µs, and
/// sleeping costs more than that: `off_the_worker` hands the tokio worker's
/// other tasks to another thread, and waking the sleeper is a futex wake
/// and a context switch each (a quarter of `host serve`'s samples were in
/// the scheduler and futexes). Spinning first took `host serve` from
/// ~4,050 to ~5,100 runs/s; only spinning both here and for the connection
/// helped. With `full`, a commit waits milliseconds for the disk, and
/// spinning made 100 durable runs in flight 1.9× slower.
pub fn spin_budget() -> std::time::Duration {
    static BUDGET: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::env::var("WASAGA_COMMIT_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
    });
    if DISK_BOUND.load(std::sync::atomic::Ordering::Relaxed) || !enabled() {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::from_micros(*BUDGET)
}

/// Set once a state file with `full` durability is opened in this process.
static DISK_BOUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Stops spinning in this process: its commits wait for the disk.
pub fn commits_wait_for_the_disk() {
    DISK_BOUND.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// One short stretch of a spin wait.
pub fn spin_a_little() {
    for _ in 0..64 {
        std::hint::spin_loop();
    }
}

/// Runs `wait` (a wait for another thread) so that, on a worker of tokio's
/// multi-thread runtime, the worker's other tasks go on meanwhile on another
/// thread: otherwise a run waiting for a commit idles a core that other
/// runs could use, and fewer appends join the next commit.
pub fn off_the_worker<R>(wait: impl FnOnce() -> R) -> R {
    let on_worker = enabled()
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_worker {
        tokio::task::block_in_place(wait)
    } else {
        wait()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn concurrent_appends_share_commits_and_each_gets_its_own_outcome() {
        let group = Arc::new(Group::<usize>::default());
        let commits = Arc::new(AtomicUsize::new(0));
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (group, commits, barrier) = (group.clone(), commits.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut results = Vec::new();
                    for round in 0..50 {
                        let work = i * 1000 + round;
                        results.push(group.submit(work, |batch| {
                            commits.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            for pending in batch {
                                // Odd work fails, even succeeds: outcomes stay apart.
                                pending.settle(if pending.work % 2 == 0 {
                                    Ok(pending.work % 4 == 0)
                                } else {
                                    Err(JournalError::LeaseLost(pending.work.to_string()))
                                });
                            }
                        }));
                    }
                    (i, results)
                })
            })
            .collect();
        for handle in handles {
            let (i, results) = handle.join().unwrap();
            for (round, result) in results.into_iter().enumerate() {
                let work = i * 1000 + round;
                match result {
                    Ok(cancel) => assert!(work % 2 == 0 && cancel == (work % 4 == 0)),
                    Err(JournalError::LeaseLost(w)) => assert_eq!(w, work.to_string()),
                    Err(other) => panic!("{other}"),
                }
            }
        }
        let commits = commits.load(Ordering::SeqCst);
        assert!(
            commits < threads * 50,
            "{commits} commits for {} appends: none was shared",
            threads * 50
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_waiting_for_commits_share_them_and_each_gets_its_own_outcome() {
        let group = Arc::new(Group::<usize>::default());
        let commits = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (group, commits) = (group.clone(), commits.clone());
                tokio::spawn(async move {
                    for round in 0..50 {
                        let work = i * 1000 + round;
                        let outcome = group
                            .enqueue(work)
                            .settled(|batch| {
                                commits.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                for pending in batch {
                                    pending.settle(Ok(pending.work % 3 == 0));
                                }
                            })
                            .await;
                        assert_eq!(outcome.unwrap(), work % 3 == 0);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let commits = commits.load(Ordering::SeqCst);
        assert!(
            commits < 400,
            "{commits} commits for 400 appends: none was shared"
        );
    }

    /// A write dropped in the queue (its run's task aborted while it
    /// waited, or its future never awaited): the write leaves the queue,
    /// and the task behind it, not the dropped one, makes the next commit
    /// (else it would wait for a wake that went to the dropped one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_dropped_in_the_queue_does_not_strand_the_ones_behind_it() {
        for aborted_while_waiting in [true, false] {
            let group = Arc::new(Group::<u32>::default());
            let committed = Arc::new(Mutex::new(Vec::new()));
            let settle_all = {
                let committed = committed.clone();
                move |batch: &[Arc<Pending<u32>>]| {
                    for pending in batch {
                        committed.lock().unwrap().push(pending.work);
                        pending.settle(Ok(false));
                    }
                }
            };
            // A commit under way on a thread, held until released.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (started, is_started) = std::sync::mpsc::channel::<()>();
            let committing = {
                let (group, settle_all) = (group.clone(), settle_all.clone());
                std::thread::spawn(move || {
                    group.submit(1, |batch| {
                        started.send(()).unwrap();
                        held.recv().unwrap();
                        settle_all(batch);
                    })
                })
            };
            is_started.recv().unwrap();
            // Until `n` writes wait in the queue (a condition, not a time).
            let queued = |n: usize| {
                let group = group.clone();
                async move {
                    while group.queued() < n {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
            };
            let (dropped, unpolled) = if aborted_while_waiting {
                let (group, settle_all) = (group.clone(), settle_all.clone());
                let task = tokio::spawn(async move { group.enqueue(2).settled(settle_all).await });
                queued(1).await;
                (Some(task), None)
            } else {
                (None, Some(group.enqueue(2)))
            };
            let behind = {
                let (group, settle_all) = (group.clone(), settle_all.clone());
                tokio::spawn(async move { group.enqueue(3).settled(settle_all).await })
            };
            queued(2).await;
            if let Some(task) = dropped {
                task.abort();
                assert!(task.await.unwrap_err().is_cancelled());
            }
            drop(unpolled);
            release.send(()).unwrap();
            committing.join().unwrap().unwrap();
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), behind)
                .await
                .expect("the write behind the dropped one was committed");
            assert!(!outcome.unwrap().unwrap());
            assert_eq!(*committed.lock().unwrap(), vec![1, 3]);
        }
    }

    #[test]
    fn a_commit_that_panics_fails_its_batch_and_the_next_one_goes_on() {
        let group = Group::<u32>::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.submit(1, |_| panic!("the commit broke"))
        }));
        assert!(panicked.is_err());
        let outcome = group.submit(2, |batch| {
            for pending in batch {
                pending.settle(Ok(true));
            }
        });
        assert!(outcome.unwrap());
    }
}
