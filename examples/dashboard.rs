//! A terminal dashboard (ratatui) driven by observers: a user list, the selected user's
//! details and a live quote that polls every second, each redrawn when its query changes.
//! Keys refetch, invalidate and mutate (optimistically, with a rollback when the write fails).
//! The data sources are in-process and slow on purpose.
//!
//! Run with `cargo run --example dashboard` (q quits). Without a terminal, or to see it in a
//! test, `cargo run --example dashboard -- --headless 12 --keys "..js.x"` renders 12 frames
//! (100 ms apart) to an in-memory screen, pressing one scripted key per frame ('.' = none),
//! and prints the last frame.
//!
//! | key | action |
//! |---|---|
//! | j / k (or arrows) | select a user (its details are another observed query) |
//! | r | refetch the quote now |
//! | i | invalidate the users: the observed list refetches |
//! | s | star / unstar the selected user (optimistic) |
//! | x | the same, with a write the source refuses: rolled back |
//! | p | pause / resume the quote's polling |
//! | q | quit |
#![allow(clippy::print_stdout)]
// The public items are for the tests that include this file; their fields speak for themselves.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pystackquery::prelude::*;
use pystackquery::{QueryObserver, Subscription};
use ratatui::Terminal;
use ratatui::backend::{Backend, TestBackend};
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph, Wrap};
use tokio::sync::mpsc;

/// Time between two headless frames.
pub const FRAME: Duration = Duration::from_millis(100);

/// A user, as the source keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: u32,
    pub name: String,
    pub email: String,
    pub starred: bool,
}

/// The live monitor's data.
#[derive(Clone, Debug, PartialEq)]
pub struct Quote {
    pub text: &'static str,
    pub author: &'static str,
    /// How many quotes the source has served.
    pub serial: usize,
}

const QUOTES: [(&str, &str); 4] = [
    ("Simplicity is prerequisite for reliability.", "Edsger W. Dijkstra"),
    (
        "The most important property of a program is whether it accomplishes the intention of its user.",
        "C. A. R. Hoare",
    ),
    ("Programs must be written for people to read.", "Harold Abelson"),
    ("Premature optimization is the root of all evil.", "Donald Knuth"),
];

/// The in-process data sources, with call counters.
#[derive(Debug)]
pub struct Source {
    users: Mutex<Vec<User>>,
    pub user_list_calls: AtomicUsize,
    pub user_calls: AtomicUsize,
    pub quote_calls: AtomicUsize,
    pub writes: AtomicUsize,
}

impl Default for Source {
    fn default() -> Self {
        let names =
            ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Barbara Liskov", "Ken Thompson"];
        let users = (1u32..)
            .zip(names)
            .map(|(id, name)| User {
                id,
                name: name.to_string(),
                email: format!(
                    "{}@example.org",
                    name.split(' ').next().unwrap_or(name).to_lowercase()
                ),
                starred: false,
            })
            .collect();
        Self {
            users: Mutex::new(users),
            user_list_calls: AtomicUsize::new(0),
            user_calls: AtomicUsize::new(0),
            quote_calls: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        }
    }
}

impl Source {
    fn users(&self) -> std::sync::MutexGuard<'_, Vec<User>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn list(&self) -> Result<Vec<User>, String> {
        self.user_list_calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok(self.users().clone())
    }

    async fn user(&self, id: u32) -> Result<User, String> {
        self.user_calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.users().iter().find(|u| u.id == id).cloned().ok_or(format!("no user {id}"))
    }

    async fn quote(&self) -> Result<Quote, String> {
        let serial = self.quote_calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (text, author) = QUOTES[(serial - 1) % QUOTES.len()];
        Ok(Quote { text, author, serial })
    }

    async fn set_starred(&self, star: &Star) -> Result<User, String> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        if star.fail {
            return Err("the source refused the write".into());
        }
        let mut users = self.users();
        let user =
            users.iter_mut().find(|u| u.id == star.id).ok_or(format!("no user {}", star.id))?;
        user.starred = star.starred;
        Ok(user.clone())
    }
}

/// The input of the star mutation.
#[derive(Clone, Debug)]
pub struct Star {
    pub id: u32,
    pub starred: bool,
    pub fail: bool,
}

fn users_query(source: &Arc<Source>) -> QueryOptions<Vec<User>, String> {
    let source = source.clone();
    QueryOptions::new(key!("users", "list"), move || {
        let source = source.clone();
        async move { source.list().await }
    })
    .stale_time(Duration::from_secs(30))
}

fn user_query(source: &Arc<Source>, id: u32) -> QueryOptions<User, String> {
    let source = source.clone();
    QueryOptions::new(key!("users", "detail", id), move || {
        let source = source.clone();
        async move { source.user(id).await }
    })
    .stale_time(Duration::from_secs(60))
}

fn quote_query(source: &Arc<Source>) -> QueryOptions<Quote, String> {
    let source = source.clone();
    QueryOptions::new(key!("quote", "random"), move || {
        let source = source.clone();
        async move { source.quote().await }
    })
    .refetch_interval(Duration::from_secs(1))
}

/// The dashboard's state: the client, three observers and what the status line says.
pub struct Dashboard {
    pub client: QueryClient,
    pub source: Arc<Source>,
    users: QueryObserver<Vec<User>, String>,
    detail: QueryObserver<User, String>,
    quote: Arc<QueryObserver<Quote, String>>,
    _subscriptions: Vec<Subscription>,
    selected: usize,
    paused: bool,
    status: Arc<Mutex<String>>,
    star: MutationOptions<Star, User, String>,
    redraw: mpsc::UnboundedSender<()>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").field("selected", &self.selected).finish_non_exhaustive()
    }
}

impl Dashboard {
    /// Builds the client and subscribes the observers (which start fetching). Each change of
    /// an observed query sends a message on the returned channel: time to redraw. Call it
    /// inside a tokio runtime.
    pub fn new() -> Result<(Self, mpsc::UnboundedReceiver<()>), pystackquery::NoRuntime> {
        let client = QueryClient::with_config(QueryClientConfig::default().retry(1))?;
        let source = Arc::new(Source::default());
        let (redraw, redraws) = mpsc::unbounded_channel();

        let users = client.watch(&users_query(&source));
        let detail = client.watch(&user_query(&source, 1));
        let quote = Arc::new(client.watch(&quote_query(&source)));
        let tell = |redraw: &mpsc::UnboundedSender<()>| {
            let redraw = redraw.clone();
            move || {
                let _ = redraw.send(());
            }
        };
        let subscriptions = vec![
            users.subscribe({
                let tell = tell(&redraw);
                move |_| tell()
            }),
            detail.subscribe({
                let tell = tell(&redraw);
                move |_| tell()
            }),
            quote.subscribe({
                let tell = tell(&redraw);
                move |_| tell()
            }),
        ];

        let writer = source.clone();
        let star = MutationOptions::new(move |star: Star| {
            let source = writer.clone();
            async move { source.set_starred(&star).await }
        })
        .on_mutate(|star: &Star, cx| {
            // The list and the details show the star at once.
            let _ = cx.update_optimistic(key!("users", "list"), |users: Option<&Vec<User>>| {
                let mut users = users?.clone();
                users.iter_mut().filter(|u| u.id == star.id).for_each(|u| u.starred = star.starred);
                Some(users)
            });
            let _ = cx
                .update_optimistic(key!("users", "detail", star.id), |user: Option<&User>| {
                    user.map(|u| User { starred: star.starred, ..u.clone() })
                });
        })
        .on_error(|_error, _star, cx| cx.rollback());

        let dashboard = Self {
            client,
            source,
            users,
            detail,
            quote,
            _subscriptions: subscriptions,
            selected: 0,
            paused: false,
            status: Arc::new(Mutex::new("Ready".into())),
            star,
            redraw,
        };
        Ok((dashboard, redraws))
    }

    fn set_status(&self, text: impl Into<String>) {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = text.into();
        let _ = self.redraw.send(());
    }

    fn selected_user(&self) -> Option<User> {
        self.users.result().data.and_then(|users| users.get(self.selected).cloned())
    }

    /// Handles one key; `false` means quit.
    pub fn handle(&mut self, key: KeyCode) -> bool {
        match key {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('j') | KeyCode::Down | KeyCode::Char('k') | KeyCode::Up => {
                let count = self.users.result().data.map_or(0, |u| u.len());
                if count > 0 {
                    let down = matches!(key, KeyCode::Char('j') | KeyCode::Down);
                    self.selected = if down {
                        (self.selected + 1).min(count - 1)
                    } else {
                        self.selected.saturating_sub(1)
                    };
                    if let Some(user) = self.selected_user() {
                        // The same observer, now on another key.
                        self.detail.set_options(user_query(&self.source, user.id));
                    }
                }
            }
            KeyCode::Char('r') => {
                let quote = self.quote.clone();
                tokio::spawn(async move { quote.refetch().await });
                self.set_status("Refetching the quote");
            }
            KeyCode::Char('i') => {
                let (client, status, redraw) =
                    (self.client.clone(), self.status.clone(), self.redraw.clone());
                tokio::spawn(async move {
                    let n = client.invalidate_queries(key!("users"), true).await;
                    *status.lock().unwrap_or_else(PoisonError::into_inner) =
                        format!("Invalidated {n} user queries; observed ones refetched");
                    let _ = redraw.send(());
                });
            }
            KeyCode::Char(c @ ('s' | 'x')) => {
                let Some(user) = self.selected_user() else { return true };
                let star = Star { id: user.id, starred: !user.starred, fail: c == 'x' };
                let (client, options, status, redraw) = (
                    self.client.clone(),
                    self.star.clone(),
                    self.status.clone(),
                    self.redraw.clone(),
                );
                self.set_status(format!("Saving {} (shown at once)", user.name));
                tokio::spawn(async move {
                    let text = match client.mutate(&options, star).await {
                        Ok(user) => format!(
                            "Saved: {} {}",
                            user.name,
                            if user.starred { "starred" } else { "unstarred" }
                        ),
                        Err(error) => format!("Write failed ({error}): rolled back"),
                    };
                    *status.lock().unwrap_or_else(PoisonError::into_inner) = text;
                    let _ = redraw.send(());
                });
            }
            KeyCode::Char('p') => {
                self.paused = !self.paused;
                if self.paused {
                    self.client.pause(key!("quote", "random"));
                    self.set_status("Quote polling paused");
                } else {
                    self.client.resume(key!("quote", "random"), true);
                    self.set_status("Quote polling resumed");
                }
            }
            _ => {}
        }
        true
    }

    /// Draws the whole screen from the observers' current states.
    pub fn render(&self, frame: &mut ratatui::Frame<'_>) {
        let [title, main, monitor, status, help] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(7),
            Constraint::Length(5),
            Constraint::Length(2),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let [list_area, detail_area] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(main);

        frame.render_widget(
            Line::from("pystackquery dashboard")
                .style(Style::default().add_modifier(Modifier::BOLD)),
            title,
        );

        let users = self.users.result();
        let items: Vec<ListItem<'_>> = users
            .data
            .iter()
            .flatten()
            .map(|u| {
                ListItem::new(format!("{} {}{}", u.id, u.name, if u.starred { " *" } else { "" }))
            })
            .collect();
        let mut list_state = ListState::default().with_selected(Some(self.selected));
        frame.render_stateful_widget(
            List::new(items)
                .block(Block::bordered().title(format!("Users [{}]", describe(&users))))
                .highlight_symbol("> "),
            list_area,
            &mut list_state,
        );

        let detail = self.detail.result();
        let text = match &detail.data {
            Some(u) => format!(
                "ID: {}\nName: {}\nEmail: {}\nStarred: {}",
                u.id,
                u.name,
                u.email,
                if u.starred { "yes" } else { "no" }
            ),
            None => "loading...".into(),
        };
        frame.render_widget(
            Paragraph::new(text)
                .block(Block::bordered().title(format!("Details [{}]", describe(&detail)))),
            detail_area,
        );

        let quote = self.quote.result();
        let text = match &quote.data {
            Some(q) => format!("\"{}\" - {}\nquote #{}", q.text, q.author, q.serial),
            None => "loading...".into(),
        };
        let polling = if self.paused { "paused" } else { "every 1 s" };
        frame.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: true }).block(
                Block::bordered()
                    .title(format!("Live quote [{}, polling {polling}]", describe(&quote))),
            ),
            monitor,
        );

        let status_text = self.status.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let counts = format!(
            "cache: {} queries | source calls: list {}, details {}, quote {}, writes {}",
            self.client.len(),
            self.source.user_list_calls.load(Ordering::SeqCst),
            self.source.user_calls.load(Ordering::SeqCst),
            self.source.quote_calls.load(Ordering::SeqCst),
            self.source.writes.load(Ordering::SeqCst),
        );
        frame.render_widget(
            Paragraph::new(vec![Line::from(status_text), Line::from(counts)]),
            status,
        );
        frame.render_widget(
            Line::from(
                "j/k select  r refetch  i invalidate  s star  x star (fails)  p pause  q quit",
            ),
            help,
        );
    }
}

fn describe<T, E>(state: &QueryState<T, E>) -> &'static str {
    match (state.status, state.fetch_status) {
        (_, FetchStatus::Fetching) if state.data.is_some() => "refreshing",
        (_, FetchStatus::Paused) => "paused",
        (QueryStatus::Pending, _) => "loading",
        (QueryStatus::Error, _) => "error",
        (QueryStatus::Success, _) if state.is_invalidated => "stale",
        (QueryStatus::Success, _) => "ok",
        _ => "idle",
    }
}

/// The text of a rendered screen, one line per row.
pub fn buffer_text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let line: String = (area.left()..area.right()).map(|x| buffer[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Renders `frames` frames, `FRAME` apart, to an in-memory `width` x `height` screen; before
/// frame `i` it presses the `i`-th character of `keys` ('.' presses nothing). Returns the text
/// of the last frame.
pub async fn run_headless(
    frames: usize,
    keys: &str,
    width: u16,
    height: u16,
) -> Result<String, Box<dyn std::error::Error>> {
    let (mut dashboard, _redraws) = Dashboard::new()?;
    let mut terminal = Terminal::new(TestBackend::new(width, height))?;
    let mut keys = keys.chars();
    for _ in 0..frames {
        match keys.next() {
            Some('.') | None => {}
            Some(c) => {
                if !dashboard.handle(KeyCode::Char(c)) {
                    break;
                }
            }
        }
        tokio::time::sleep(FRAME).await;
        terminal.draw(|frame| dashboard.render(frame))?;
    }
    Ok(buffer_text(terminal.backend().buffer()))
}

/// Runs on the real terminal until q.
async fn run_interactive() -> Result<(), Box<dyn std::error::Error>> {
    let (mut dashboard, mut redraws) = Dashboard::new()?;
    let (key_sender, mut keys) = mpsc::unbounded_channel();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = stop.clone();
    // crossterm's event reading blocks: a thread of its own feeds the keys in.
    let reader = std::thread::spawn(move || {
        while !reading.load(Ordering::SeqCst) {
            if let Ok(true) = event::poll(Duration::from_millis(100))
                && let Ok(Event::Key(key)) = event::read()
                && key.kind == KeyEventKind::Press
                && key_sender.send(key.code).is_err()
            {
                break;
            }
        }
    });
    let mut terminal = ratatui::init();
    let result = async {
        loop {
            terminal.draw(|frame| dashboard.render(frame))?;
            tokio::select! {
                Some(key) = keys.recv() => if !dashboard.handle(key) { break },
                _ = redraws.recv() => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        terminal.backend_mut().flush()?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    ratatui::restore();
    stop.store(true, Ordering::SeqCst);
    let _ = reader.join();
    result
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut headless = None;
    let mut keys = String::from("..j.s.x..i...");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--headless" => headless = Some(args.next().ok_or("--headless needs N")?.parse()?),
            "--keys" => keys = args.next().ok_or("--keys needs a string")?,
            other => {
                return Err(
                    format!("unknown argument {other:?} (use --headless N, --keys KEYS)").into()
                );
            }
        }
    }
    match headless {
        Some(frames) => print!("{}", run_headless(frames, &keys, 100, 20).await?),
        None => run_interactive().await?,
    }
    Ok(())
}
