//! The coordinator's side of the worker processes: spawn them, split the
//! connections between them, send a command to all and collect the answers.

use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
};

use crate::control::{
    Command, ConnectOutcome, ConnectPlan, Event, PhaseReport, ResumePlan, ResumeReport, Tally,
};

#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

#[derive(Debug)]
pub(crate) struct Pool {
    workers: Vec<Worker>,
}

impl Pool {
    /// Spawns `n` worker processes (this executable, `worker` subcommand).
    pub(crate) fn spawn(n: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating fanout-bench")?;
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            workers.push(Worker {
                child,
                stdin,
                stdout: BufReader::new(stdout).lines(),
            });
        }
        Ok(Self { workers })
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.child.id()).collect()
    }

    async fn call(&mut self, commands: Vec<Command>) -> anyhow::Result<Vec<Event>> {
        for (w, cmd) in self.workers.iter_mut().zip(&commands) {
            let mut line = serde_json::to_vec(cmd)?;
            line.push(b'\n');
            w.stdin
                .write_all(&line)
                .await
                .context("a worker process exited")?;
            w.stdin.flush().await?;
        }
        let mut events = Vec::with_capacity(commands.len());
        for w in &mut self.workers {
            let Some(line) = w.stdout.next_line().await? else {
                bail!("a worker process exited (see its messages above)");
            };
            events.push(serde_json::from_str(&line).context("parsing a worker event")?);
        }
        Ok(events)
    }

    async fn call_same(&mut self, make: impl Fn() -> Command) -> anyhow::Result<Vec<Event>> {
        let commands = self.workers.iter().map(|_| make()).collect();
        self.call(commands).await
    }

    /// Opens `plan.count` connections (starting at `plan.first`), split
    /// evenly between the workers.
    pub(crate) async fn connect(&mut self, plan: &ConnectPlan) -> anyhow::Result<ConnectOutcome> {
        let n = self.workers.len() as u64;
        let commands = (0..n)
            .map(|w| {
                let lo = plan.first + plan.count * w / n;
                let hi = plan.first + plan.count * (w + 1) / n;
                Command::Connect(ConnectPlan {
                    first: lo,
                    count: hi - lo,
                    ..plan.clone()
                })
            })
            .collect();
        let events = self.call(commands).await?;
        merge_outcomes(events)
    }

    /// Opens `plan.count` resuming clients, split evenly between the workers.
    pub(crate) async fn resume(&mut self, plan: &ResumePlan) -> anyhow::Result<ConnectOutcome> {
        let n = self.workers.len() as u64;
        let commands = (0..n)
            .map(|w| {
                let lo = plan.first + plan.count * w / n;
                let hi = plan.first + plan.count * (w + 1) / n;
                Command::Resume(ResumePlan {
                    first: lo,
                    count: hi - lo,
                    ..plan.clone()
                })
            })
            .collect();
        let events = self.call(commands).await?;
        merge_outcomes(events)
    }

    pub(crate) async fn resume_reports(&mut self) -> anyhow::Result<Vec<ResumeReport>> {
        let events = self.call_same(|| Command::ResumeReport).await?;
        Ok(events
            .into_iter()
            .filter_map(|e| match e {
                Event::Resume(r) => Some(*r),
                _ => None,
            })
            .collect())
    }

    /// The resuming clients' running counters, summed over the workers.
    pub(crate) async fn tally(&mut self) -> anyhow::Result<Tally> {
        let events = self.call_same(|| Command::Tally).await?;
        let mut total = Tally::default();
        for e in &events {
            if let Event::Tally(t) = e {
                total.add(t);
            }
        }
        Ok(total)
    }

    /// Resuming clients stop closing their connections themselves.
    pub(crate) async fn hold(&mut self) -> anyhow::Result<()> {
        self.call_same(|| Command::Hold).await?;
        Ok(())
    }

    pub(crate) async fn storm(&mut self, down_ms: u64) -> anyhow::Result<ConnectOutcome> {
        let events = self.call_same(|| Command::Storm { down_ms }).await?;
        merge_outcomes(events)
    }

    pub(crate) async fn phase(&mut self, base: u64, len: u64) -> anyhow::Result<()> {
        self.call_same(|| Command::Phase { base, len }).await?;
        Ok(())
    }

    pub(crate) async fn progress(&mut self) -> anyhow::Result<u64> {
        let events = self.call_same(|| Command::Progress).await?;
        Ok(events
            .iter()
            .map(|e| match e {
                Event::Progress { received } => *received,
                _ => 0,
            })
            .sum())
    }

    pub(crate) async fn reports(&mut self) -> anyhow::Result<Vec<PhaseReport>> {
        let events = self.call_same(|| Command::Report).await?;
        Ok(events
            .into_iter()
            .filter_map(|e| match e {
                Event::Report(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    /// Closes every connection with a close handshake and ends the workers.
    pub(crate) async fn close(mut self) -> anyhow::Result<()> {
        self.call_same(|| Command::Close).await?;
        for w in &mut self.workers {
            let _ = w.child.wait().await;
        }
        Ok(())
    }
}

fn merge_outcomes(events: Vec<Event>) -> anyhow::Result<ConnectOutcome> {
    let mut total = ConnectOutcome::default();
    for e in events {
        let Event::Connected(o) = e else {
            bail!("unexpected worker event {e:?}");
        };
        total.ok += o.ok;
        total.failed += o.failed;
        total.elapsed_ms = total.elapsed_ms.max(o.elapsed_ms);
        total.ready_us.extend(o.ready_us);
        for err in o.errors {
            if total.errors.len() < 5 && !total.errors.contains(&err) {
                total.errors.push(err);
            }
        }
    }
    Ok(total)
}
