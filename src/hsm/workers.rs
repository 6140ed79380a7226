//! HSM workers: dedicated OS threads that run blocking HSM calls taken from one shared queue, at most
//! `max` at once, each answered on a oneshot channel within a timeout.
//!
//! Wake-up rule: a worker drains the queue, then lingers for `LINGER` (yielding its CPU) before it
//! sleeps, and a submitter wakes a sleeping worker (or spawns one, up to `max`) only when the queue
//! holds more jobs than there are awake workers free to take them. Why: with a fast HSM (hsm-sim's
//! AES-GCM takes ~1 us) a futex wake and its context switches cost far more than the call, and
//! requests arrive tens of us apart, so one lingering worker takes call after call with no wake-up;
//! with a slow one (a network HSM, ~1 ms a call) every job that would wait behind a running one gets
//! a worker of its own, so up to `max` calls run in parallel. A worker counts as free from the moment
//! its answer is computed (before the caller hears back), and as awake from the moment it is
//! signalled, so a burst of submissions wakes one worker per waiting job, not one per submission.
//! Everything is decided under one mutex, with `wakeups` as the condvar's predicate, so no wake-up is
//! lost and a spurious one changes nothing.
//!
//! A call still running when its caller's timeout passes (an HSM that never answers) keeps its
//! worker, which is then counted `overdue` and not toward `max`: a replacement may start (at once
//! if calls are queued, else at the next submission), so `max` hung calls can't leave every later
//! call waiting behind them until they return, perhaps never. Replacements stop at twice `max`
//! threads in all. When the hung calls return, the surplus workers leave after their job, so no
//! more than `max` calls run (and hold HSM sessions) at once.
//!
//! A job still queued at its caller's deadline is abandoned: skipped when a worker reaches it, and
//! dropped from the queue (without running) once the queue has doubled since it was last pruned, so
//! while every worker hangs the queue holds at most about two timeouts' worth of requests.
//!
//! A job's deadline counts from its submission, and the job can read it (`deadline`): a call that
//! waited in the queue has that much less time for its retries.

use std::cell::Cell;

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A queued call: `run` runs it, marks its worker free (`running -= 1`), then sends the answer.
struct Job {
    run: Box<dyn FnOnce(&Shared) + Send>,
    phase: Arc<AtomicU8>,
}

/// A job's phase, for telling a call that overran its timeout while running from one that never ran.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const OVERDUE: u8 = 2;
const DONE: u8 = 3;
/// Its caller's deadline passed before it started: it never runs.
const ABANDONED: u8 = 4;

/// The queue is pruned of abandoned jobs when it reaches this length, or twice its length after
/// the last pruning.
const PRUNE_FROM: usize = 1024;

thread_local! {
    /// The deadline of the job this worker thread is running.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// On an HSM worker thread, inside a job: when the job's caller stops waiting (its submission plus
/// the timeout). None elsewhere.
pub fn deadline() -> Option<Instant> {
    DEADLINE.with(Cell::get)
}

/// How long a worker that found the queue empty keeps looking before it sleeps (see above).
const LINGER: Duration = Duration::from_micros(20);

/// Why a job gave no result.
#[derive(Debug, PartialEq, Eq)]
pub enum JobError {
    /// The job panicked (its worker lives on).
    Panicked,
    /// No result within the timeout, counted from submission. The job still occupies its worker
    /// until it returns; one that had not started yet is skipped.
    TimedOut,
}

pub struct Workers {
    shared: Arc<Shared>,
    max: usize,
    timeout: Duration,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Workers that may run calls at once, overdue ones aside (`Workers::max`).
    max: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Worker threads alive.
    threads: usize,
    /// Workers not asleep: looking at the queue, running a job, or signalled and not yet up.
    awake: usize,
    /// Workers running a job (until its answer is computed).
    running: usize,
    /// Of those, the ones whose caller's timeout has passed: not counted toward `max`.
    overdue: usize,
    /// Signals sent to sleeping workers and not yet taken.
    wakeups: usize,
    /// Set when the `Workers` is dropped: workers finish the queue, then exit.
    closed: bool,
    /// The queue's length after it was last pruned of abandoned jobs.
    pruned_len: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock (jobs run outside it), so poisoning carries no meaning.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Workers {
    /// Starts one worker; more are spawned on demand, up to `max`.
    pub fn new(max: usize, timeout: Duration) -> Result<Workers, String> {
        let workers = Workers {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                max: max.max(1),
            }),
            max: max.max(1),
            timeout,
        };
        {
            let mut st = workers.shared.lock();
            st.threads = 1;
            st.awake = 1;
        }
        spawn(&workers.shared).map_err(|e| format!("cannot start an HSM worker thread: {e}"))?;
        Ok(workers)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls running or queued whose callers still wait (not past their timeout). Queued jobs
    /// abandoned since the queue was last pruned count too.
    pub fn calls_waited_for(&self) -> usize {
        let st = self.shared.lock();
        st.running.saturating_sub(st.overdue) + st.queue.len()
    }

    /// Runs `f` on a worker thread; never blocks the caller's thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, JobError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let phase = Arc::new(AtomicU8::new(QUEUED));
        let job_phase = phase.clone();
        let job_deadline = Instant::now() + self.timeout;
        let run = Box::new(move |shared: &Shared| {
            // A caller that timed out while its job waited gets nothing: don't spend the HSM on it.
            let result = (job_phase.swap(RUNNING, Ordering::AcqRel) == QUEUED && !tx.is_closed()).then(|| {
                DEADLINE.set(Some(job_deadline));
                let result = catch_unwind(AssertUnwindSafe(f));
                DEADLINE.set(None);
                result
            });
            // Free before the caller hears back, so that its next call finds this worker free and
            // wakes no other.
            let mut st = shared.lock();
            st.running -= 1;
            if job_phase.swap(DONE, Ordering::AcqRel) == OVERDUE {
                st.overdue -= 1;
            }
            drop(st);
            if let Some(result) = result {
                let _ = tx.send(result.map_err(|_| JobError::Panicked));
            }
        });
        self.submit(Job {
            run,
            phase: phase.clone(),
        });
        let deadline = tokio::time::Instant::from_std(job_deadline);
        let mut watch = OverdueWatch {
            shared: self.shared.clone(),
            phase,
            deadline,
            armed: true,
        };
        let outcome = tokio::time::timeout_at(deadline, rx).await;
        match outcome {
            Ok(Ok(result)) => {
                watch.armed = false;
                result
            }
            // The job was dropped without an answer: only an unwinding job can do that.
            Ok(Err(_)) => {
                watch.armed = false;
                Err(JobError::Panicked)
            }
            Err(_) => {
                watch.armed = false;
                mark_overdue(&self.shared, &watch.phase);
                Err(JobError::TimedOut)
            }
        }
    }

    fn submit(&self, job: Job) {
        let mut st = self.shared.lock();
        if st.queue.is_empty() {
            st.pruned_len = 0; // a burst's threshold doesn't outlive it
        }
        if st.queue.len() >= PRUNE_FROM.max(2 * st.pruned_len) {
            st.queue.retain(|j| j.phase.load(Ordering::Acquire) != ABANDONED);
            st.pruned_len = st.queue.len();
        }
        st.queue.push_back(job);
        let provision = provide(&mut st, self.max);
        drop(st);
        act(&self.shared, provision);
    }
}

enum Provision {
    Nothing,
    Wake,
    Start,
}

/// Whether the queue needs another worker: more jobs than awake workers free to take them. Then a
/// sleeping worker is signalled, or a new one counted in (up to `max` not overdue, twice `max` in
/// all); `act` does it once the lock is released.
fn provide(st: &mut State, max: usize) -> Provision {
    if st.queue.len() <= st.awake - st.running {
        return Provision::Nothing;
    }
    if st.threads > st.awake {
        st.wakeups += 1;
        st.awake += 1;
        Provision::Wake
    } else if st.threads - st.overdue < max && st.threads < 2 * max {
        st.threads += 1;
        st.awake += 1;
        Provision::Start
    } else {
        Provision::Nothing
    }
}

fn act(shared: &Arc<Shared>, provision: Provision) {
    match provision {
        Provision::Nothing => {}
        Provision::Wake => shared.wake.notify_one(),
        Provision::Start => {
            if let Err(e) = spawn(shared) {
                // The jobs stay queued for the running workers (there is always at least one).
                tracing::warn!(error = %e, "cannot start another HSM worker thread");
                let mut st = shared.lock();
                st.threads -= 1;
                st.awake -= 1;
            }
        }
    }
}

impl Drop for Workers {
    /// Stops the workers once the queue is empty. Not joined: a worker may be the thread dropping
    /// this (its job held the last reference), or stuck in a call past its timeout.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// A job still running at its deadline makes its worker overdue (under the lock, so the job's own
/// end, which takes the lock too, sees the mark or undoes nothing); one still queued is abandoned.
/// An overdue call frees a place under `max`: the jobs already queued behind it get a worker now,
/// not at the next submission.
fn mark_overdue(shared: &Arc<Shared>, phase: &AtomicU8) {
    let mut st = shared.lock();
    let before = phase.fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| match p {
        RUNNING => Some(OVERDUE),
        QUEUED => Some(ABANDONED),
        _ => None,
    });
    if before != Ok(RUNNING) {
        return;
    }
    st.overdue += 1;
    let provision = provide(&mut st, shared.max);
    drop(st);
    act(shared, provision);
}

/// Marks the job overdue at its deadline even when its caller stops waiting first (a client's
/// deadline or disconnect drops `run`): a hung call must stop counting toward `max` either way.
struct OverdueWatch {
    shared: Arc<Shared>,
    phase: Arc<AtomicU8>,
    deadline: tokio::time::Instant,
    armed: bool,
}

impl Drop for OverdueWatch {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, phase, deadline) = (self.shared.clone(), self.phase.clone(), self.deadline);
        runtime.spawn(async move {
            tokio::time::sleep_until(deadline).await;
            mark_overdue(&shared, &phase);
        });
    }
}

fn spawn(shared: &Arc<Shared>) -> std::io::Result<()> {
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("hsm-worker".into())
        .spawn(move || work(&shared))
        .map(drop)
}

fn work(shared: &Arc<Shared>) {
    let mut lingered = false;
    let mut st = shared.lock();
    loop {
        if let Some(job) = st.queue.pop_front() {
            st.running += 1;
            drop(st);
            (job.run)(shared); // catches its own panics
            lingered = false;
            st = shared.lock();
            // A replacement started while calls hung; once they return, the surplus goes at
            // once, so no more than `max` calls run (and hold sessions) at a time. The jobs it
            // leaves queued get a sleeping worker woken if no awake one is free for them.
            if st.threads - st.overdue > shared.max {
                st.awake -= 1;
                st.threads -= 1;
                let provision = provide(&mut st, shared.max);
                drop(st);
                act(shared, provision);
                return;
            }
            continue;
        }
        if st.closed {
            break;
        }
        if !lingered {
            // Still counted awake and free, so submitters wake no one meanwhile.
            drop(st);
            let until = Instant::now() + LINGER;
            while Instant::now() < until && shared.lock().queue.is_empty() {
                std::thread::yield_now();
            }
            lingered = true;
            st = shared.lock();
            continue;
        }
        st.awake -= 1;
        loop {
            if st.wakeups > 0 {
                st.wakeups -= 1; // the submitter counted us awake already
                break;
            }
            if st.closed {
                st.awake += 1;
                break;
            }
            st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }
    st.awake -= 1;
    st.threads -= 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn workers(max: usize) -> Workers {
        Workers::new(max, Duration::from_secs(10)).unwrap()
    }

    /// Runs a call that blocks until the returned sender is dropped, and waits for its timeout.
    async fn a_hung_call(w: &Workers) -> std::sync::mpsc::Sender<()> {
        let (release, hang) = std::sync::mpsc::channel::<()>();
        assert_eq!(
            w.run(move || {
                let _ = hang.recv();
            })
            .await,
            Err(JobError::TimedOut)
        );
        release
    }

    #[tokio::test]
    async fn results_arrive() {
        let w = workers(2);
        assert_eq!(w.run(|| 6 * 7).await, Ok(42));
        let name = w.run(|| std::thread::current().name().map(String::from)).await;
        assert_eq!(
            name,
            Ok(Some("hsm-worker".into())),
            "jobs run on a worker, not the caller"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_jobs_all_complete() {
        let w = Arc::new(workers(4));
        let tasks: Vec<_> = (0..2000u64)
            .map(|i| {
                let w = w.clone();
                tokio::spawn(async move { w.run(move || i * 2).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Ok(i as u64 * 2));
        }
        let st = w.shared.lock();
        assert!(st.queue.is_empty() && st.threads <= 4, "{} threads", st.threads);
    }

    /// Calls that never return (an HSM that stopped answering) don't hold up later ones: once
    /// their caller's timeout passes their worker is overdue and a replacement starts, up to twice
    /// `max` threads; when they do return, their workers count again.
    #[tokio::test]
    async fn hung_calls_are_replaced_up_to_twice_max() {
        let w = Workers::new(1, Duration::from_millis(300)).unwrap();
        let mut releases = Vec::new();
        for _ in 0..2 {
            let (release, hang) = std::sync::mpsc::channel::<()>();
            releases.push(release);
            assert_eq!(
                w.run(move || {
                    let _ = hang.recv();
                })
                .await,
                Err(JobError::TimedOut)
            );
        }
        assert_eq!(w.shared.lock().overdue, 2);
        assert_eq!(w.shared.lock().threads, 2, "one replacement for the first hung call");
        // Both threads hang and the cap is reached: this one waits, and times out.
        assert_eq!(w.run(|| 7).await, Err(JobError::TimedOut));
        drop(releases); // the hung calls return
        for _ in 0..200 {
            if w.shared.lock().overdue == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(w.shared.lock().overdue, 0);
        assert_eq!(w.run(|| 8).await, Ok(8));
        // The replacement's surplus thread went once the hung calls returned.
        for _ in 0..200 {
            if w.shared.lock().threads == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(w.shared.lock().threads, 1, "back to max threads");
    }

    /// A call queued behind a hung one gets a worker when the hung one turns overdue, not at the
    /// next submission (there may be none before its own timeout).
    #[tokio::test]
    async fn a_call_queued_behind_a_hung_one_runs_once_that_is_overdue() {
        let w = Arc::new(Workers::new(1, Duration::from_secs(2)).unwrap());
        let (release, hang) = std::sync::mpsc::channel::<()>();
        let hung = tokio::spawn({
            let w = w.clone();
            async move {
                w.run(move || {
                    let _ = hang.recv();
                })
                .await
            }
        });
        // Queued with 2 s to go, of which the hung call is overdue after 0.5 s.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(w.run(|| 7).await, Ok(7));
        assert_eq!(hung.await.unwrap(), Err(JobError::TimedOut));
        drop(release);
    }

    /// Once hung calls return, no more than `max` calls run at once, though the queue is never
    /// empty: the replacement's surplus leaves after its job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_hung_calls_return_at_most_max_run_at_once() {
        let w = Arc::new(Workers::new(1, Duration::from_millis(400)).unwrap());
        let release = a_hung_call(&w).await;
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (w, running, most) = (w.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    w.run(move || {
                        most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(10));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(25)).await;
        drop(release); // the hung call returns while calls are still queued
        for c in calls {
            assert_eq!(c.await.unwrap(), Ok(()));
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "more than max calls ran at once");
    }

    /// A caller that stops waiting before the timeout (its client's deadline) still gets its
    /// hung call counted overdue at the timeout.
    #[tokio::test]
    async fn a_hung_call_whose_caller_left_early_is_overdue_at_its_deadline() {
        let w = Workers::new(1, Duration::from_millis(300)).unwrap();
        let (release, hang) = std::sync::mpsc::channel::<()>();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            w.run(move || {
                let _ = hang.recv();
            }),
        )
        .await;
        assert!(gave_up.is_err(), "the caller left first");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(w.shared.lock().overdue, 1);
        assert_eq!(w.run(|| 7).await, Ok(7), "a replacement worker ran it");
        drop(release);
    }

    #[tokio::test]
    async fn one_hung_call_does_not_hold_up_the_next() {
        let w = Workers::new(1, Duration::from_millis(300)).unwrap();
        let release = a_hung_call(&w).await;
        assert_eq!(w.run(|| 7).await, Ok(7), "a replacement worker ran it");
        drop(release);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_later_jobs_still_run() {
        let w = workers(1);
        let r: Result<(), _> = w.run(|| panic!("injected")).await;
        assert_eq!(r, Err(JobError::Panicked));
        assert_eq!(w.run(|| 1).await, Ok(1));
        assert_eq!(w.shared.lock().threads, 1, "the one worker survived");
    }

    /// Slow jobs run `max` at a time: never more, and no fewer while enough are waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_max_jobs_run_at_once_and_slow_ones_use_them_all() {
        let w = Arc::new(workers(3));
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let (w, now, peak) = (w.clone(), now.clone(), peak.clone());
                tokio::spawn(async move {
                    w.run(move || {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    /// A second slow call made while the first runs does not wait for it (a network HSM must not
    /// serialize light load).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_call_does_not_wait_behind_another() {
        let w = Arc::new(workers(8));
        // Each call waits for the other to start: run one after the other, the first gives up.
        let (to_second, from_first) = std::sync::mpsc::channel::<()>();
        let (to_first, from_second) = std::sync::mpsc::channel::<()>();
        let meet = |tell: std::sync::mpsc::Sender<()>, hear: std::sync::mpsc::Receiver<()>| {
            move || {
                let _ = tell.send(());
                hear.recv_timeout(Duration::from_secs(5)).is_ok()
            }
        };
        let first = tokio::spawn({
            let w = w.clone();
            let job = meet(to_second, from_second);
            async move { w.run(job).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            w.run(meet(to_first, from_first)).await,
            Ok(true),
            "the second met the first"
        );
        assert_eq!(first.await.unwrap(), Ok(true), "the first met the second");
    }

    /// One call at a time needs one worker: a worker is free before its caller hears back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequential_calls_do_not_grow_the_pool() {
        let w = workers(8);
        for i in 0..500 {
            assert_eq!(w.run(move || i).await, Ok(i));
        }
        assert_eq!(w.shared.lock().threads, 1);
    }

    #[tokio::test]
    async fn a_job_slower_than_the_timeout_times_out_and_does_not_block_others() {
        let w = Workers::new(2, Duration::from_millis(500)).unwrap();
        let started = Instant::now();
        let r = w.run(|| std::thread::sleep(Duration::from_millis(5000))).await;
        assert_eq!(r, Err(JobError::TimedOut));
        assert!(started.elapsed() < Duration::from_millis(4000));
        assert_eq!(w.run(|| 5).await, Ok(5), "another worker takes the next call");
    }

    /// A job still queued when its caller stopped waiting is skipped, not run late. (The caller
    /// leaves before the blocker is overdue: at one shared deadline, the worker the overdue
    /// blocker frees could start the job in the tick before its caller's timer fires.)
    #[tokio::test]
    async fn a_job_whose_caller_timed_out_before_it_started_is_skipped() {
        let w = Workers::new(1, Duration::from_millis(500)).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let blocker = w.run(|| std::thread::sleep(Duration::from_millis(1500)));
        let r2 = ran.clone();
        let late = tokio::time::timeout(
            Duration::from_millis(250),
            w.run(move || r2.fetch_add(1, Ordering::SeqCst)),
        );
        let (a, b) = tokio::join!(blocker, late);
        assert_eq!(a, Err(JobError::TimedOut));
        assert!(b.is_err(), "the late caller left");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(w.run(|| 0).await, Ok(0));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    /// A call that waited in the queue has only what is left of its caller's timeout for its
    /// retries, not a whole timeout from when it started.
    #[tokio::test]
    async fn a_job_reads_the_deadline_its_submission_set() {
        let w = Workers::new(1, Duration::from_millis(3000)).unwrap();
        let left = || deadline().map(|d| d.saturating_duration_since(Instant::now()));
        let first = w.run(move || {
            let left = left();
            std::thread::sleep(Duration::from_millis(1200));
            left
        });
        let queued = w.run(left); // waits behind the first: one worker
        let (first, queued) = tokio::join!(first, queued);
        let (first, queued) = (first.unwrap().unwrap(), queued.unwrap().unwrap());
        assert!(first > Duration::from_millis(2400), "{first:?}");
        assert!(
            queued < Duration::from_millis(2000),
            "the queued call's wait counts: {queued:?} left"
        );
    }

    /// While every worker hangs, calls whose callers' deadlines passed are dropped from the queue
    /// instead of piling up until the HSM answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_calls_do_not_pile_up_behind_hung_workers() {
        let w = Arc::new(Workers::new(1, Duration::from_millis(50)).unwrap());
        let (release, hang) = std::sync::mpsc::channel::<()>();
        let hang = Arc::new(Mutex::new(hang));
        let hung = |w: Arc<Workers>, hang: Arc<Mutex<std::sync::mpsc::Receiver<()>>>| async move {
            w.run(move || {
                let _ = hang.lock().unwrap().recv();
            })
            .await
        };
        // Both threads (max and its one replacement) hang.
        assert_eq!(hung(w.clone(), hang.clone()).await, Err(JobError::TimedOut));
        assert_eq!(hung(w.clone(), hang.clone()).await, Err(JobError::TimedOut));
        for _ in 0..5 {
            let calls: Vec<_> = (0..1000)
                .map(|_| {
                    let w = w.clone();
                    tokio::spawn(async move { w.run(|| 0).await })
                })
                .collect();
            for c in calls {
                assert_eq!(c.await.unwrap(), Err(JobError::TimedOut));
            }
        }
        let queued = w.shared.lock().queue.len();
        assert!(queued <= 2 * PRUNE_FROM, "{queued} calls queued after 5000 abandoned");
        drop(release);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_pool_ends_its_threads() {
        let w = Arc::new(workers(4));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let w = w.clone();
                tokio::spawn(async move { w.run(|| std::thread::sleep(Duration::from_millis(20))).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let w = Arc::into_inner(w).unwrap();
        assert!(w.shared.lock().threads > 1);
        let shared = Arc::downgrade(&w.shared);
        drop(w);
        // Each worker holds the shared state until it exits.
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.strong_count() > 0 {
            assert!(
                Instant::now() < deadline,
                "{} workers still alive",
                shared.strong_count()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
