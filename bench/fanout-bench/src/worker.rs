//! A worker process (`fanout-bench worker`): holds its share of the client
//! connections and answers the coordinator's commands (see `control`).

use std::{
    io::Write,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::Semaphore,
};
use tokio_util::task::TaskTracker;

use crate::{
    client::{self, Shared, Signal, Spec},
    control::{Command, Event},
    ledger::Ledger,
    resume::{self, ResumeSpec, Sinks},
};

pub(crate) async fn run() -> anyhow::Result<()> {
    let shared = Arc::new(Shared::new());
    let ledger = Arc::new(Ledger::new());
    let tasks = TaskTracker::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("reading commands")? {
        let cmd: Command = serde_json::from_str(&line).context("parsing a command")?;
        let event = match cmd {
            Command::Connect(plan) => {
                shared.count_attempts(plan.count);
                shared.recorder.set_connections(plan.first, plan.count);
                let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
                for index in plan.first..plan.first + plan.count {
                    match Spec::new(&plan, index) {
                        Ok(spec) => {
                            tasks.spawn(client::run(spec, shared.clone(), gate.clone()));
                        }
                        Err(e) => anyhow::bail!("connection {index}: {e}"),
                    }
                }
                Event::Connected(shared.outcomes().await)
            }
            Command::Resume(plan) => {
                shared.count_attempts(plan.count);
                shared.recorder.set_connections(plan.first, plan.count);
                let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
                let sinks = Sinks {
                    shared: shared.clone(),
                    ledger: ledger.clone(),
                };
                for index in plan.first..plan.first + plan.count {
                    match ResumeSpec::new(&plan, index) {
                        Ok(spec) => {
                            tasks.spawn(resume::run(spec, sinks.clone(), gate.clone()));
                        }
                        Err(e) => anyhow::bail!("client {index}: {e}"),
                    }
                }
                Event::Connected(shared.outcomes().await)
            }
            Command::ResumeReport => {
                let connected = ledger.connected.load(Ordering::Relaxed);
                let phase = shared.recorder.report(connected);
                Event::Resume(Box::new(ledger.report(phase)))
            }
            Command::Tally => Event::Tally(ledger.tally(shared.recorder.received())),
            Command::Hold => {
                ledger.hold();
                Event::Ready
            }
            Command::Phase { base, len } => {
                shared.recorder.start_phase(base, len);
                ledger.reset();
                Event::Ready
            }
            Command::Progress => Event::Progress {
                received: shared.recorder.received(),
            },
            Command::Report => {
                Event::Report(shared.recorder.report(shared.open.load(Ordering::Relaxed)))
            }
            Command::Storm { down_ms } => {
                shared.count_attempts(shared.open.load(Ordering::Relaxed));
                shared.signal.send_modify(|s| {
                    s.generation += 1;
                    s.down_ms = down_ms;
                });
                Event::Connected(shared.outcomes().await)
            }
            Command::Close => {
                shared.signal.send_modify(|s: &mut Signal| s.close = true);
                tasks.close();
                let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
                emit(&Event::Closed)?;
                break;
            }
        };
        emit(&event)?;
    }
    Ok(())
}

fn emit(event: &Event) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, event).context("writing an event")?;
    out.write_all(b"\n").context("writing an event")?;
    out.flush().context("writing an event")?;
    Ok(())
}
