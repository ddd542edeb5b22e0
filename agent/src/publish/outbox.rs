//! The durable outbox: every event is written here, and synced to disk,
//! before anything tries to publish it; it leaves only when the broker has
//! acknowledged it. Broker outages, network cuts, a crash or a power cut
//! therefore delay events but never lose them.
//!
//! On disk it is a folder of append-only segment files plus one small
//! `acked` file holding the highest record id whose every predecessor the
//! broker has acknowledged:
//!
//! ```text
//! outbox/
//!   seg-00000000000000000001.log   records 1 …
//!   seg-00000000000000004097.log   records 4097 …
//!   acked                          "4095\n"
//! ```
//!
//! Each record is `len u32 | crc32 u32 | id u64 | created_ms u64 |
//! topic_len u16 | topic | payload` (little-endian; `len` and the CRC cover
//! everything after the CRC). A record torn by a power cut fails its length
//! or CRC check; the tail from there is cut off at start-up and counted,
//! never a reason to refuse to start. A record damaged at rest (a worn SD
//! card) also fails its check, but whole records follow it: start-up finds
//! the next one, and only the damaged record is lost, logged and counted.
//!
//! **fsync policy:** every append is followed by `fdatasync` on the segment
//! before `append` returns, and `acked` is replaced atomically (write,
//! fsync, rename). At a few events per second per camera this costs one
//! flush per event (about 1–10 ms on eMMC/SSD), paid on the publisher's
//! thread, never on a camera's. While a backlog drains after an outage,
//! `acked` is written at most every [`WATERMARK_EVERY`] and when the
//! outbox empties, not at every acknowledgement: an SD card that flushes a
//! hundred times a second would take hours over a full outbox. A crash
//! meanwhile sends the records acknowledged since again, under their own
//! ids (consumers drop repeats by id).
//!
//! Only each pending record's id, segment and offset stay in memory; the
//! payloads are read back from disk when they are (re)published, so a long
//! outage fills the disk, up to the configured bounds, not memory.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
const HEADER: usize = 4 + 4;
const FIXED: usize = 8 + 8 + 2;

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub dir: PathBuf,
    /// Total size of pending records; beyond it the oldest are dropped (and counted).
    pub max_bytes: u64,
    /// Pending records older than this are dropped (and counted).
    pub max_age: Duration,
    pub segment_bytes: u64,
}

impl OutboxConfig {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: DEFAULT_MAX_AGE,
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

/// A record read back for publishing.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: u64,
    pub created_ms: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u64,
    segment: u64,
    offset: u64,
    len: u32,
    age: Age,
}

/// A record's age, from the wall clock only when it was first seen (read
/// at start-up, or written now: age 0), then from the monotonic clock. A
/// gateway that booted with its clock days behind, then had it corrected,
/// does not find the events it queued in between "too old" and drop them.
#[derive(Debug, Clone, Copy)]
struct Age {
    when_seen: Duration,
    seen: std::time::Instant,
}

impl Age {
    fn of(created_ms: u64) -> Self {
        // Written while the clock was wrong (a gateway without a clock
        // battery, booted at 1970 before time came from the network): its
        // age is not known, and must not make it decades "too old" at the
        // next start, once the clock is right.
        let known = created_ms >= EARLIEST_PLAUSIBLE_MS;
        Self {
            when_seen: Duration::from_millis(if known {
                now_ms().saturating_sub(created_ms)
            } else {
                0
            }),
            seen: std::time::Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.when_seen + self.seen.elapsed()
    }
}

/// What start-up found, and what bounds forced out: reported, never silent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    pub recovered: u64,
    pub torn_bytes_discarded: u64,
    pub dropped_for_bounds: u64,
    pub acknowledged: u64,
    /// Records the storage changed after they were written, found at
    /// start-up (damaged with whole records after them) or when read back
    /// to be sent: dropped, so that the records after them still go out.
    pub dropped_corrupt: u64,
    /// Segment files that could not be read at start-up: set aside, their
    /// records lost (how many is not known).
    pub unreadable_segments: u64,
}

pub struct Outbox {
    config: OutboxConfig,
    /// First record id of each segment, oldest first.
    segments: VecDeque<u64>,
    writer: File,
    writer_len: u64,
    pending: VecDeque<Pending>,
    pending_bytes: u64,
    /// Done out of order, waiting for their predecessors: acknowledged by
    /// the broker (true) or dropped (false).
    acked_ahead: std::collections::BTreeMap<u64, bool>,
    /// The record that failed to be read, how many times, and when last
    /// counted.
    unreadable: Option<(u64, u32, Instant)>,
    watermark: u64,
    /// The watermark `acked` holds, and when it was written.
    persisted: (u64, Option<Instant>),
    next_id: u64,
    pub stats: OutboxStats,
}

/// 2025-01-01: no record of this agent was written before.
const EARLIEST_PLAUSIBLE_MS: u64 = 1_735_689_600_000;

/// While a backlog drains, `acked` is written at most this often.
const WATERMARK_EVERY: Duration = Duration::from_millis(250);

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("seg-{first:020}.log"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Outbox {
    pub fn open(config: OutboxConfig) -> anyhow::Result<Outbox> {
        let dir = &config.dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the outbox folder {}", dir.display()))?;
        // A watermark that cannot be read costs repeats, never the events:
        // every stored one is sent again, and the IOC drops repeats by id.
        let acked = dir.join("acked");
        let watermark = match std::fs::read_to_string(&acked) {
            Ok(s) => s.trim().parse().unwrap_or_else(|_| {
                tracing::error!(file = %acked.display(), "outbox: `acked` is not a number (damaged storage?); every stored event is sent again, and the IOC drops the repeats by event id");
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::error!(file = %acked.display(), "outbox: cannot read `acked` ({e}; failing storage?); every stored event is sent again, and the IOC drops the repeats by event id");
                0
            }
        };
        let names: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list the outbox folder {}", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let first_id = |name: &str, prefix: &str| -> Option<u64> {
            name.strip_prefix(prefix)?
                .strip_suffix(".log")?
                .parse()
                .ok()
        };
        let mut segments: Vec<u64> = names.iter().filter_map(|n| first_id(n, "seg-")).collect();
        segments.sort_unstable();
        // Ids of segments set aside at an earlier start stay taken: the IOC
        // may hold their events, and drops repeats by id.
        let reserved = names
            .iter()
            .filter_map(|n| Some((first_id(n, "damaged-seg-")?, n)))
            .map(|(first, n)| first + max_records(&dir.join(n)))
            .max()
            .unwrap_or(0);

        let mut stats = OutboxStats::default();
        let mut pending = VecDeque::new();
        let mut pending_bytes = 0;
        let mut next_id = (watermark + 1).max(reserved);
        let mut readable = Vec::with_capacity(segments.len());
        // The id the last readable segment's next record would have.
        let mut writer_next = 0;
        for &first in &segments {
            // A segment is named by the id its first record has or will
            // have: an empty one, made before a watermark that could not be
            // written, must not see ids below its name.
            next_id = next_id.max(first);
            let path = segment_path(dir, first);
            let mut data = Vec::new();
            let read = |data: &mut Vec<u8>| {
                data.clear();
                File::open(&path).and_then(|mut f| f.read_to_end(data))
            };
            // Once more after a pause: a card's passing error must not
            // cost a whole segment.
            let read = read(&mut data).or_else(|_| {
                std::thread::sleep(UNREADABLE_SPACING);
                read(&mut data)
            });
            if let Err(e) = read {
                // One bad file (a failing sector, a folder where a file
                // was) must not cost the events in the others, which a
                // refusal to open would send to a temporary outbox.
                next_id = next_id.max(first + max_records(&path));
                let aside = dir.join(format!("damaged-seg-{first:020}.log"));
                let moved = std::fs::rename(&path, &aside).is_ok();
                tracing::error!(
                    segment = %path.display(),
                    kept_as = %if moved { aside.display().to_string() } else { "(could not be moved aside)".into() },
                    "outbox: cannot read a segment ({e}; failing storage?): its events are lost, the other segments' still go out"
                );
                stats.unreadable_segments += 1;
                continue;
            }
            readable.push(first);
            let mut offset = 0usize;
            // Ids follow each other within a segment, from the one it is named by.
            let mut expected = first;
            while offset < data.len() {
                match parse_record(&data[offset..]) {
                    Some((rec, size)) => {
                        expected = rec.id + 1;
                        if rec.id >= next_id || rec.id > watermark {
                            next_id = next_id.max(rec.id + 1);
                        }
                        if rec.id > watermark {
                            pending.push_back(Pending {
                                id: rec.id,
                                segment: first,
                                offset: offset as u64,
                                len: size as u32,
                                age: Age::of(rec.created_ms),
                            });
                            pending_bytes += size as u64;
                        }
                        offset += size;
                    }
                    None => {
                        if let Some((at, id)) = next_whole_record(&data, offset, expected) {
                            // Those acknowledged before the damage are no loss.
                            let lost = id.saturating_sub(expected.max(watermark + 1));
                            if lost > 0 {
                                tracing::error!(
                                    segment = %path.display(), offset, bytes = at - offset, records = lost,
                                    first = id - lost,
                                    "outbox: records damaged on disk since they were written (failing storage?) are lost; the records after them are kept"
                                );
                            }
                            stats.dropped_corrupt += lost;
                            offset = at;
                            continue;
                        }
                        // A torn tail (power cut mid-write): keep every complete record before it.
                        let torn = data.len() - offset;
                        tracing::warn!(segment = %path.display(), offset, bytes = torn, "outbox: discarding a torn or corrupt record tail");
                        stats.torn_bytes_discarded += torn as u64;
                        OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_len(offset as u64))
                            .with_context(|| format!("cannot truncate {}", path.display()))?;
                        break;
                    }
                }
            }
            writer_next = expected;
        }
        stats.recovered = pending.len() as u64;
        let mut segments: VecDeque<u64> = readable.into();
        // Appends go on in the last segment only where its ids do: after
        // ids taken by a segment set aside, a new one starts.
        if segments.is_empty() || writer_next != next_id {
            segments.push_back(next_id);
        }
        let last = *segments.back().expect("one segment");
        let path = segment_path(dir, last);
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        // A first segment just made, and the folder itself, must be on disk
        // before records synced into them count as stored.
        crate::durable::sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::durable::sync_dir(parent)?;
        }
        let writer_len = writer.metadata()?.len();
        let mut outbox = Outbox {
            config,
            segments,
            writer,
            writer_len,
            pending,
            pending_bytes,
            acked_ahead: Default::default(),
            unreadable: None,
            watermark,
            persisted: (watermark, None),
            next_id,
            stats,
        };
        outbox.remove_done_segments()?;
        Ok(outbox)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The id of the oldest record not yet done.
    pub fn oldest_pending(&self) -> Option<u64> {
        self.pending.front().map(|p| p.id)
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Age of the oldest pending record.
    pub fn oldest_age(&self) -> Option<Duration> {
        self.pending.front().map(|p| p.age.now())
    }

    /// Appends and syncs one record; returns its id. Bounds are applied
    /// first, oldest records going first.
    pub fn append(&mut self, topic: &str, payload: &[u8]) -> anyhow::Result<u64> {
        let id = self.next_id;
        let created_ms = now_ms();
        let body_len = FIXED + topic.len() + payload.len();
        let mut rec = Vec::with_capacity(HEADER + body_len);
        rec.extend_from_slice(&(body_len as u32).to_le_bytes());
        rec.extend_from_slice(&[0; 4]);
        rec.extend_from_slice(&id.to_le_bytes());
        rec.extend_from_slice(&created_ms.to_le_bytes());
        rec.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        rec.extend_from_slice(topic.as_bytes());
        rec.extend_from_slice(payload);
        let crc = crc32fast::hash(&rec[HEADER..]);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());

        self.enforce_bounds(rec.len() as u64)?;
        if self.writer_len > 0 && self.writer_len + rec.len() as u64 > self.config.segment_bytes {
            let path = segment_path(&self.config.dir, id);
            let writer = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot create outbox segment {}", path.display()))?;
            // The new file's name must survive a power cut with the records
            // synced into it, or they would go with it.
            crate::durable::sync_dir(&self.config.dir)?;
            self.writer = writer;
            self.segments.push_back(id);
            self.writer_len = 0;
        }
        let offset = self.writer_len;
        let mut written = self.write_synced(&rec);
        // A full disk: the newest event takes the oldest ones' space, as
        // the bounds would have it, instead of waiting in memory.
        if matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::StorageFull)
            && self.drop_oldest_segment()
        {
            written = self.write_synced(&rec);
        }
        if let Err(e) = written {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot write to the outbox in {} (disk full or read-only?)",
                self.config.dir.display()
            )));
        }
        self.writer_len += rec.len() as u64;
        self.next_id += 1;
        let segment = *self.segments.back().expect("one segment");
        self.pending.push_back(Pending {
            id,
            segment,
            offset,
            len: rec.len() as u32,
            age: Age::of(created_ms),
        });
        self.pending_bytes += rec.len() as u64;
        Ok(id)
    }

    fn write_synced(&mut self, rec: &[u8]) -> std::io::Result<()> {
        let written = self
            .writer
            .write_all(rec)
            .and_then(|()| self.writer.sync_data());
        if written.is_err() {
            // A record half written (disk full) or written but not synced
            // (an I/O error) must not stay: the offsets of every later record,
            // and a retry of this one under the same id, assume the segment
            // ends where the last whole record does.
            let _ = self.writer.set_len(self.writer_len);
        }
        written
    }

    /// Drops the pending records of the oldest segment not being written,
    /// counted as dropped for the bounds, and deletes it; returns whether
    /// it went.
    fn drop_oldest_segment(&mut self) -> bool {
        let Some(&end) = self.segments.get(1) else {
            return false;
        };
        let ids: Vec<u64> = self
            .pending
            .iter()
            .take_while(|p| p.id < end)
            .map(|p| p.id)
            .collect();
        let dropped = ids.iter().filter(|&&id| !self.done_ahead(id)).count() as u64;
        tracing::error!(
            dropped,
            dir = %self.config.dir.display(),
            "disk full: dropping the oldest undelivered events to store the newest; free space on this disk or lower storage.outbox_max_mb"
        );
        self.stats.dropped_for_bounds += dropped;
        let before = self.segments.len();
        // The watermark may not fit on the full disk: the segment still goes.
        let _ = self.done_all(ids.into_iter().map(|id| (id, false)));
        self.segments.len() < before
    }

    /// Reads pending records in order, starting after `after` (0: from the
    /// oldest), at most `limit` of them.
    pub fn read_pending(&mut self, after: u64, limit: usize) -> anyhow::Result<Vec<Record>> {
        self.read_pending_except(after, limit, |_| false)
    }

    /// As [`Outbox::read_pending`], passing over the ids `skip` names
    /// without reading them (events the broker refused, which wait).
    pub fn read_pending_except(
        &mut self,
        after: u64,
        limit: usize,
        skip: impl Fn(u64) -> bool,
    ) -> anyhow::Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut corrupt = Vec::new();
        let mut failed = None;
        // Records already done out of order (acknowledged, or dropped
        // here) wait only for their predecessors.
        // Found by halving: events the broker refused hold the watermark,
        // and every event taken after them stays in `pending` meanwhile.
        let start = self.pending.partition_point(|p| p.id <= after);
        let wanted: Vec<(u64, u64, u64, u32)> = self
            .pending
            .range(start..)
            .filter(|p| !self.done_ahead(p.id) && !skip(p.id))
            .take(limit)
            .map(|p| (p.id, p.segment, p.offset, p.len))
            .collect();
        for (id, segment, offset, len) in wanted {
            let path = segment_path(&self.config.dir, segment);
            let mut buf = vec![0; len as usize];
            let read = File::open(&path)
                .and_then(|mut f| {
                    f.seek(SeekFrom::Start(offset))?;
                    f.read_exact(&mut buf)
                })
                .with_context(|| format!("cannot read outbox record {id} in {}", path.display()));
            if let Err(e) = read {
                // Worth retrying (a busy card, too many open files); but a
                // sector that stays unreadable must not hold back every
                // record after it until the bounds drop it, hours or days
                // later. Only failures of the same record, a while apart,
                // count, and one record goes at a time.
                let counted = match self.unreadable {
                    Some((last, n, at)) if last == id => {
                        (at.elapsed() >= UNREADABLE_SPACING).then_some(n + 1)
                    }
                    _ => Some(1),
                };
                if let Some(n) = counted {
                    self.unreadable = Some((id, n, Instant::now()));
                }
                let tries = counted.unwrap_or_default();
                if tries >= UNREADABLE_TRIES {
                    tracing::error!(
                        "{e:#}, {tries} times over {} s (failing storage?): the record is dropped, the others still go out",
                        (UNREADABLE_SPACING * (UNREADABLE_TRIES - 1)).as_secs()
                    );
                    self.unreadable = None;
                    self.stats.dropped_corrupt += 1;
                    self.done(id, false)?;
                }
                failed = Some(e);
                break;
            }
            match parse_record(&buf) {
                Some((rec, _)) if rec.id == id => out.push(rec),
                // A record that no longer matches its checksum never will be
                // right again, and must not hold back every record after it.
                _ => corrupt.push((id, path)),
            }
        }
        for (id, path) in corrupt {
            tracing::error!(
                record = id,
                segment = %path.display(),
                "an outbox record failed its checksum when read back (failing storage?); it is dropped, the others still go out"
            );
            self.stats.dropped_corrupt += 1;
            self.done(id, false)?;
        }
        match failed {
            // The records before the one that failed still go out.
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// The broker acknowledged `id`. Acks may arrive out of order; the
    /// watermark only moves past ids all of whose predecessors are acked.
    pub fn ack(&mut self, id: u64) -> anyhow::Result<()> {
        self.done(id, true)
    }

    /// Whether `id` is done but waits for a predecessor to be.
    fn done_ahead(&self, id: u64) -> bool {
        self.acked_ahead.contains_key(&id)
    }

    /// `id` needs sending no more: acknowledged, or dropped.
    fn done(&mut self, id: u64, acknowledged: bool) -> anyhow::Result<()> {
        self.done_all([(id, acknowledged)])
    }

    /// Records that need sending no more, with whether each was
    /// acknowledged, in one move of the watermark (one write of it, however
    /// many).
    fn done_all(&mut self, ids: impl IntoIterator<Item = (u64, bool)>) -> anyhow::Result<()> {
        for (id, acknowledged) in ids {
            if id > self.watermark && !self.done_ahead(id) {
                self.acked_ahead.insert(id, acknowledged);
            }
        }
        let before = self.watermark;
        while let Some(front) = self.pending.front() {
            let Some(acknowledged) = self.acked_ahead.remove(&front.id) else {
                break;
            };
            self.watermark = front.id;
            self.stats.acknowledged += u64::from(acknowledged);
            self.pending_bytes -= front.len as u64;
            self.pending.pop_front();
        }
        if self.watermark != before {
            // Segments wholly done go even when the watermark cannot be
            // written: on a full disk they are the space that lets it be.
            // Lost in a crash, the watermark only sends a few records again.
            let due = self.pending.is_empty()
                || self
                    .persisted
                    .1
                    .is_none_or(|at| at.elapsed() >= WATERMARK_EVERY);
            let persisted = if due {
                self.persist_watermark()
            } else {
                Ok(())
            };
            self.remove_done_segments()?;
            persisted?;
        }
        Ok(())
    }

    /// Writes the watermark now, if it moved since it was last written.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if self.persisted.0 == self.watermark {
            return Ok(());
        }
        self.persist_watermark()
    }

    fn persist_watermark(&mut self) -> anyhow::Result<()> {
        let tmp = self.config.dir.join("acked.tmp");
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        writeln!(f, "{}", self.watermark)?;
        f.sync_data()?;
        std::fs::rename(&tmp, self.config.dir.join("acked"))
            .context("cannot replace the outbox `acked` file")?;
        self.persisted = (self.watermark, Some(Instant::now()));
        Ok(())
    }

    /// Deletes segments whose records are all acknowledged (never the one being written).
    fn remove_done_segments(&mut self) -> anyhow::Result<()> {
        while self.segments.len() > 1 {
            // Done when no record past the watermark lies in it (ids may
            // skip those of a segment set aside).
            let next_first = self.segments[1];
            if self.pending.front().is_some_and(|p| p.id < next_first) {
                break;
            }
            let first = self.segments.pop_front().expect("checked");
            let path = segment_path(&self.config.dir, first);
            std::fs::remove_file(&path).with_context(|| {
                format!("cannot delete finished outbox segment {}", path.display())
            })?;
        }
        Ok(())
    }

    /// Drops the oldest pending records when size or age bounds require
    /// it. Dropped records are acknowledged locally (so they are never sent)
    /// and counted; the caller reports the gap.
    fn enforce_bounds(&mut self, incoming: u64) -> anyhow::Result<()> {
        let mut bytes = self.pending_bytes;
        let dropped: Vec<u64> = self
            .pending
            .iter()
            .take_while(|p| {
                let over =
                    bytes + incoming > self.config.max_bytes || p.age.now() > self.config.max_age;
                if over {
                    bytes = bytes.saturating_sub(p.len as u64);
                }
                over
            })
            .map(|p| p.id)
            .collect();
        let (Some(&first), Some(&last)) = (dropped.first(), dropped.last()) else {
            return Ok(());
        };
        tracing::error!(
            dropped = dropped.len(),
            first,
            last,
            "outbox bounds reached: dropping the oldest undelivered events"
        );
        // Dropped, not delivered: not counted as acknowledged. One write of
        // the watermark for them all: thousands of records over age after
        // a restart took one synced write each, with the outbox locked.
        // Counted first: gone from the outbox even if the watermark cannot be written.
        self.stats.dropped_for_bounds +=
            dropped.iter().filter(|&&id| !self.done_ahead(id)).count() as u64;
        self.done_all(dropped.into_iter().map(|id| (id, false)))
    }
}

impl Drop for Outbox {
    /// A stop keeps every acknowledgement: none is sent again.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(
                "outbox: {e:#}; events acknowledged since the last write of it are sent again at the next start"
            );
        }
    }
}

/// The most records a segment file can hold, by its size (all of a
/// segment's size when even that cannot be read).
fn max_records(path: &Path) -> u64 {
    let len = std::fs::metadata(path).map_or(SEGMENT_BYTES, |m| m.len());
    len / (HEADER + FIXED) as u64 + 1
}

/// Failed reads of one record, [`UNREADABLE_SPACING`] apart, before it is
/// dropped.
const UNREADABLE_TRIES: u32 = 3;
const UNREADABLE_SPACING: Duration = Duration::from_secs(1);

/// How far past the id expected a record found after damage may be: the
/// damaged bytes may have held several records, but an id much further on
/// is a chance match in a payload, not a record.
const RESYNC_IDS: u64 = 4096;

/// The first whole record after the damaged bytes at `from`, and its id:
/// a record whose id is the one expected there or a little later and which
/// passes its check. None when no whole record follows (a torn tail).
fn next_whole_record(data: &[u8], from: usize, expected: u64) -> Option<(usize, u64)> {
    let last_start = data.len().checked_sub(HEADER + FIXED)?;
    (from + 1..=last_start).find_map(|at| {
        // The id is read before the checksum is computed: it rules out
        // almost every offset for the price of one comparison.
        let id = u64::from_le_bytes(data[at + HEADER..at + HEADER + 8].try_into().ok()?);
        if !(expected..expected + RESYNC_IDS).contains(&id) {
            return None;
        }
        let (rec, _) = parse_record(&data[at..])?;
        Some((at, rec.id))
    })
}

fn parse_record(data: &[u8]) -> Option<(Record, usize)> {
    if data.len() < HEADER + FIXED {
        return None;
    }
    let len = u32::from_le_bytes(data[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(data[4..8].try_into().ok()?);
    if len < FIXED || data.len() < HEADER + len {
        return None;
    }
    let body = &data[HEADER..HEADER + len];
    if crc32fast::hash(body) != crc {
        return None;
    }
    let id = u64::from_le_bytes(body[0..8].try_into().ok()?);
    let created_ms = u64::from_le_bytes(body[8..16].try_into().ok()?);
    let topic_len = u16::from_le_bytes(body[16..18].try_into().ok()?) as usize;
    if FIXED + topic_len > len {
        return None;
    }
    let topic = String::from_utf8(body[FIXED..FIXED + topic_len].to_vec()).ok()?;
    let payload = body[FIXED + topic_len..].to_vec();
    Some((
        Record {
            id,
            created_ms,
            topic,
            payload,
        },
        HEADER + len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn the_segment(dir: &Path) -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".log"))
            .unwrap()
    }

    /// The ids `read_pending` gives from the start, up to 100.
    fn pending_ids(o: &mut Outbox) -> Vec<u64> {
        o.read_pending(0, 100)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    }

    fn open(dir: &Path) -> Outbox {
        Outbox::open(OutboxConfig {
            segment_bytes: 256,
            ..OutboxConfig::new(dir.to_path_buf())
        })
        .unwrap()
    }

    #[test]
    fn records_passed_over_are_not_read_and_leave_room_for_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path());
        for i in 0..6 {
            o.append("t/a", format!("event {i}").as_bytes()).unwrap();
        }
        let ids = |r: Vec<Record>| r.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let refused = [2, 3];
        let read = o.read_pending_except(1, 2, |id| refused.contains(&id));
        assert_eq!(ids(read.unwrap()), [4, 5]);
        assert_eq!(ids(o.read_pending(1, 2).unwrap()), [2, 3]);
    }

    #[test]
    fn pending_records_survive_a_restart_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path());
        for i in 0..10 {
            assert_eq!(
                o.append("t/a", format!("event {i}").as_bytes()).unwrap(),
                i + 1
            );
        }
        o.ack(1).unwrap();
        o.ack(3).unwrap(); // out of order: 2 is still pending
        drop(o);
        let mut o = open(dir.path());
        assert_eq!(pending_ids(&mut o), (2..=10).collect::<Vec<_>>());
        assert_eq!(o.read_pending(0, 1).unwrap()[0].payload, b"event 1");
        assert_eq!(o.stats.recovered, 9);
    }

    #[test]
    fn acked_segments_are_deleted_and_ids_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path());
        for _ in 0..20 {
            o.append("t", &[7; 40]).unwrap();
        }
        assert!(segments(dir.path()).len() > 3);
        for id in 1..=20 {
            o.ack(id).unwrap();
        }
        assert_eq!(
            segments(dir.path()).len(),
            1,
            "only the segment being written is kept"
        );
        assert!(o.is_empty());
        drop(o);
        let mut o = open(dir.path());
        assert!(o.is_empty());
        assert_eq!(
            o.append("t", b"x").unwrap(),
            21,
            "ids never repeat, so consumers can de-duplicate"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_every_complete_record_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(OutboxConfig::new(dir.path().to_path_buf())).unwrap();
        for i in 0..5 {
            o.append("t", format!("e{i}").as_bytes()).unwrap();
        }
        drop(o);
        let seg = the_segment(dir.path());
        let len = std::fs::metadata(&seg).unwrap().len();
        // Cut the last record in the middle, as a power cut would.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut o = Outbox::open(OutboxConfig::new(dir.path().to_path_buf())).unwrap();
        assert_eq!(o.len(), 4);
        assert!(o.stats.torn_bytes_discarded > 0);
        assert_eq!(
            o.append("t", b"after").unwrap(),
            5,
            "the torn record's id is reused: it was never published"
        );
        let recs = o.read_pending(0, 10).unwrap();
        assert_eq!(recs.last().unwrap().payload, b"after");
    }

    #[test]
    fn a_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(OutboxConfig::new(dir.path().to_path_buf())).unwrap();
        o.append("t", b"first").unwrap();
        o.append("t", b"second").unwrap();
        drop(o);
        let seg = the_segment(dir.path());
        let mut data = std::fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 2] ^= 0xff;
        std::fs::write(&seg, data).unwrap();
        let mut o = Outbox::open(OutboxConfig::new(dir.path().to_path_buf())).unwrap();
        assert_eq!(
            o.read_pending(0, 10)
                .unwrap()
                .iter()
                .map(|r| r.payload.clone())
                .collect::<Vec<_>>(),
            vec![b"first".to_vec()]
        );
    }

    #[test]
    fn a_record_damaged_at_rest_loses_only_itself() {
        // Damage in the payload (the checksum fails) and in the length
        // (the record's end is unknown): either way the next record is found.
        let payload_byte = HEADER + FIXED + 1 + 2;
        for (what, at) in [("payload", payload_byte), ("length", 1)] {
            let dir = tempfile::tempdir().unwrap();
            let mut o = Outbox::open(OutboxConfig::new(dir.path().to_path_buf())).unwrap();
            for p in ["first", "second", "third"] {
                o.append("t", p.as_bytes()).unwrap();
            }
            drop(o);
            let seg = the_segment(dir.path());
            let mut data = std::fs::read(&seg).unwrap();
            let (_, first_len) = parse_record(&data).unwrap();
            data[first_len + at] ^= 0x5a;
            std::fs::write(&seg, data).unwrap();

            let mut o = Outbox::open(OutboxConfig::new(dir.path().to_path_buf())).unwrap();
            let payloads = |o: &mut Outbox| {
                o.read_pending(0, 10)
                    .unwrap()
                    .into_iter()
                    .map(|r| (r.id, String::from_utf8(r.payload).unwrap()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                payloads(&mut o),
                [(1, "first".into()), (3, "third".into())],
                "damaged {what}"
            );
            assert_eq!(o.stats.dropped_corrupt, 1, "damaged {what}");
            assert_eq!(o.stats.torn_bytes_discarded, 0, "damaged {what}");
            assert_eq!(o.append("t", b"fourth").unwrap(), 4, "damaged {what}");
            o.ack(1).unwrap();
            o.ack(3).unwrap();
            drop(o);
            let mut o = Outbox::open(OutboxConfig::new(dir.path().to_path_buf())).unwrap();
            assert_eq!(
                payloads(&mut o),
                [(4, "fourth".into())],
                "damaged {what}: the damaged record is not waited for"
            );
            assert_eq!(
                o.stats.dropped_corrupt, 0,
                "damaged {what}: a loss is counted once, not at every start"
            );
        }
    }

    #[test]
    fn a_record_spoiled_on_disk_after_start_is_dropped_and_the_rest_go_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(OutboxConfig::new(dir.path().to_path_buf())).unwrap();
        for payload in [&b"first"[..], b"second", b"third"] {
            o.append("t", payload).unwrap();
        }
        // The storage flips a bit in the second record while the agent runs.
        let seg = the_segment(dir.path());
        let mut data = std::fs::read(&seg).unwrap();
        let at = data.windows(6).position(|w| w == b"second").unwrap();
        data[at] ^= 0x01;
        std::fs::write(&seg, data).unwrap();
        assert_eq!(pending_ids(&mut o), [1, 3]);
        // Read again before 1 is acknowledged: the spoiled one is not
        // counted twice.
        assert_eq!(o.read_pending(0, 10).unwrap().len(), 2);
        assert_eq!(o.stats.dropped_corrupt, 1);
        o.ack(3).unwrap();
        o.ack(1).unwrap();
        assert!(
            o.read_pending(0, 10).unwrap().is_empty(),
            "nothing held back"
        );
        assert_eq!(o.stats.acknowledged, 2);
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut s: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
            .collect();
        s.sort();
        s
    }

    #[test]
    fn a_record_that_stays_unreadable_is_dropped_and_the_rest_go_out() {
        let dir = tempfile::tempdir().unwrap();
        // A segment per record.
        let mut o = Outbox::open(OutboxConfig {
            segment_bytes: 1,
            ..OutboxConfig::new(dir.path().to_path_buf())
        })
        .unwrap();
        for _ in 0..5 {
            o.append("t", &[7; 40]).unwrap();
        }
        // The first record's sectors go bad: reading it fails (a link to a
        // folder in its place: opened, then unreadable, even as root).
        let bad = segments(dir.path())[0].clone();
        let good = std::fs::read(&bad).unwrap();
        std::fs::remove_file(&bad).unwrap();
        std::os::unix::fs::symlink(std::env::temp_dir(), &bad).unwrap();
        // A passing fault: it fails, then reads again; nothing is lost.
        for _ in 0..2 {
            let e = o.read_pending(0, 100).unwrap_err();
            assert!(
                format!("{e:#}").contains("cannot read outbox record 1"),
                "{e:#}"
            );
        }
        std::fs::remove_file(&bad).unwrap();
        std::fs::write(&bad, &good).unwrap();
        assert_eq!(pending_ids(&mut o), [1, 2, 3, 4, 5]);
        // A lasting one: after a few failures some time apart, that record
        // alone is dropped, and the others go out.
        std::fs::remove_file(&bad).unwrap();
        std::os::unix::fs::symlink(std::env::temp_dir(), &bad).unwrap();
        let mut failures = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        let ids = loop {
            match o.read_pending(0, 100) {
                Ok(records) => break records.iter().map(|r| r.id).collect::<Vec<_>>(),
                Err(_) if Instant::now() < deadline => failures += 1,
                Err(e) => panic!("still failing: {e:#}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(failures >= UNREADABLE_TRIES, "{failures}");
        assert_eq!(ids, [2, 3, 4, 5]);
        assert_eq!(o.stats.dropped_corrupt, 1);
    }

    #[test]
    fn finished_segments_go_even_when_the_watermark_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path());
        for _ in 0..20 {
            o.append("t", &[7; 40]).unwrap();
        }
        assert!(segments(dir.path()).len() > 3);
        // No room for the watermark's file (a full disk, here a folder in its way).
        std::fs::create_dir(dir.path().join("acked.tmp")).unwrap();
        for id in 1..=20 {
            assert!(o.ack(id).is_err());
        }
        assert_eq!(segments(dir.path()).len(), 1, "the space is freed");
        drop(o);
        std::fs::remove_dir(dir.path().join("acked.tmp")).unwrap();
        let mut o = open(dir.path());
        // Only what the last segment holds is sent again, and ids go on.
        let again = pending_ids(&mut o);
        assert!(again.len() < 20 && again.last() == Some(&20), "{again:?}");
        assert_eq!(o.append("t", b"x").unwrap(), 21);
    }

    #[test]
    fn size_bound_drops_the_oldest_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(OutboxConfig {
            max_bytes: 200,
            ..OutboxConfig::new(dir.path().to_path_buf())
        })
        .unwrap();
        for _ in 0..10 {
            o.append("t", &[1; 30]).unwrap();
        }
        assert!(o.pending_bytes() <= 200);
        assert!(o.stats.dropped_for_bounds >= 5);
        let first = o.read_pending(0, 1).unwrap()[0].id;
        assert_eq!(
            first,
            1 + o.stats.dropped_for_bounds,
            "the oldest went first"
        );
        // Dropped, not delivered: never counted as acknowledged.
        assert_eq!(o.stats.acknowledged, 0);
    }

    #[test]
    fn a_segment_unreadable_at_start_costs_its_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            segment_bytes: 1, // a segment per record
            ..OutboxConfig::new(dir.path().to_path_buf())
        };
        let mut o = Outbox::open(config.clone()).unwrap();
        for _ in 0..5 {
            o.append("t", &[7; 40]).unwrap();
        }
        drop(o);
        // The second record's file and the last one cannot be read (a
        // link to a folder in their place: opened, then unreadable).
        let files = segments(dir.path());
        for bad in [&files[1], &files[4]] {
            std::fs::remove_file(bad).unwrap();
            std::os::unix::fs::symlink(std::env::temp_dir(), bad).unwrap();
        }
        let mut o = Outbox::open(config.clone()).unwrap();
        assert_eq!(pending_ids(&mut o), [1, 3, 4]);
        assert_eq!(o.stats.unreadable_segments, 2);
        assert!(
            dir.path()
                .join(format!("damaged-seg-{:020}.log", 2))
                .exists()
        );
        // A crash that kept the renames but not the new segment: the ids
        // of those set aside stay taken all the same.
        drop(o);
        let newest = segments(dir.path()).pop().unwrap();
        assert_eq!(std::fs::metadata(&newest).unwrap().len(), 0);
        std::fs::remove_file(newest).unwrap();
        let mut o = Outbox::open(config.clone()).unwrap();
        // New records never take the ids of those set aside.
        let next = o.append("t", b"x").unwrap();
        assert!(next > 5, "{next}");
        drop(o);
        let mut o = Outbox::open(config.clone()).unwrap();
        assert_eq!(pending_ids(&mut o), [1, 3, 4, next]);
        assert_eq!(o.stats.unreadable_segments, 0, "set aside once");
        // Acknowledged, a record's segment goes, even with the ids of the
        // one set aside between it and the next.
        for id in [1, 3, 4] {
            o.ack(id).unwrap();
        }
        assert_eq!(segments(dir.path()).len(), 1, "only the one being written");
    }

    #[test]
    fn an_unreadable_watermark_sends_everything_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path());
        for _ in 0..3 {
            o.append("t", b"e").unwrap();
        }
        o.ack(1).unwrap();
        drop(o);
        std::fs::write(dir.path().join("acked"), "garbage").unwrap();
        assert_eq!(pending_ids(&mut open(dir.path())), [1, 2, 3]);
    }

    #[test]
    fn a_full_disk_drops_the_oldest_segment_for_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(OutboxConfig {
            segment_bytes: 150, // two records a segment
            ..OutboxConfig::new(dir.path().to_path_buf())
        })
        .unwrap();
        for _ in 0..6 {
            o.append("t", &[7; 40]).unwrap();
        }
        let before = segments(dir.path());
        assert_eq!(before.len(), 3);
        // The next segment lands on a full disk (/dev/full: every write
        // fails with "no space left").
        std::os::unix::fs::symlink("/dev/full", dir.path().join(format!("seg-{:020}.log", 7)))
            .unwrap();
        let e = o.append("t", &[7; 40]).unwrap_err();
        assert!(format!("{e:#}").contains("disk full"), "{e:#}");
        // The oldest segment's two records made room (here in vain).
        assert_eq!(o.stats.dropped_for_bounds, 2);
        assert!(!before[0].exists());
        assert_eq!(pending_ids(&mut o), [3, 4, 5, 6]);
    }

    #[test]
    fn a_backlog_drains_without_a_write_of_the_watermark_per_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = open(dir.path());
        for _ in 0..500 {
            o.append("t", b"event").unwrap();
        }
        let acked = dir.path().join("acked");
        let written = || std::fs::metadata(&acked).map(|m| m.modified().unwrap());
        let mut writes = 0;
        let mut last = written().ok();
        for id in 1..=499 {
            o.ack(id).unwrap();
            let now = written().ok();
            writes += usize::from(now != last);
            last = now;
        }
        assert!(
            writes <= 3,
            "{writes} writes of the watermark for 499 acknowledgements"
        );
        // A crash now sends again only what was acknowledged since.
        let on_disk: u64 = std::fs::read_to_string(&acked)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(on_disk >= 1);
        std::mem::forget(o);
        let mut o = open(dir.path());
        // (Records in segments already deleted as done are not.)
        let again = o.read_pending(0, 1000).unwrap();
        let again: Vec<u64> = again.iter().map(|r| r.id).collect();
        assert!(again.iter().all(|&id| id > on_disk), "{again:?}");
        assert_eq!(again.last(), Some(&500));
        // Emptied, or stopped, the outbox writes it at once.
        for id in again {
            o.ack(id).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&acked).unwrap().trim(), "500");
        o.append("t", b"x").unwrap();
        o.append("t", b"y").unwrap();
        o.ack(501).unwrap();
        drop(o);
        assert_eq!(pending_ids(&mut open(dir.path())), [502]);
    }

    #[test]
    fn records_written_while_the_clock_was_wrong_are_not_too_old_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutboxConfig {
            max_age: Duration::from_secs(3600),
            ..OutboxConfig::new(dir.path().to_path_buf())
        };
        let mut o = Outbox::open(config.clone()).unwrap();
        o.append("t", b"queued at boot").unwrap();
        drop(o);
        // Its time as a gateway booted at 1970 wrote it.
        let seg = the_segment(dir.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[16..24].copy_from_slice(&1_000u64.to_le_bytes());
        let crc = crc32fast::hash(&bytes[8..]);
        bytes[4..8].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&seg, bytes).unwrap();
        let mut o = Outbox::open(config).unwrap();
        o.append("t", b"now").unwrap();
        assert_eq!(pending_ids(&mut o), [1, 2]);
        assert_eq!(o.stats.dropped_for_bounds, 0);
    }

    #[test]
    fn a_read_only_folder_is_a_clear_error() {
        let e = Outbox::open(OutboxConfig::new(PathBuf::from("/proc/matthan-outbox")))
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("/proc/matthan-outbox"), "{e:#}");
    }
}
