//! Progress of a run: a spinner with the current step when stderr is a terminal, plain
//! timestamped lines otherwise (the logs of a Job).

use crate::optimize::Event;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: std::time::Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            start: std::time::Instant::now(),
        }
    }

    pub fn event(&self, event: Event) {
        let line = |m: &str| format!("[{:>6.1}s] {m}", self.start.elapsed().as_secs_f64());
        match (&self.bar, event) {
            (Some(bar), Event::Step { message }) => bar.set_message(message),
            (Some(bar), Event::Done { message }) => bar.println(line(&message)),
            (None, Event::Step { message } | Event::Done { message }) => {
                eprintln!("{}", line(&message))
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
