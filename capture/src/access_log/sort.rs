//! An external sort with bounded memory: entries are collected into a run until the run
//! holds its byte budget, the run is sorted and spilled to a file, and at the end the
//! runs are merged. Past [`MAX_RUNS`] files the runs are first merged into one, so the
//! number of open files stays bounded too.
//!
//! Keys are unique (time, file, line), so the order is total and stable by construction:
//! within one timestamp, lines keep their file order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Runs merged at once.
const MAX_RUNS: usize = 64;
/// Bytes of bookkeeping counted per entry on top of its payload.
const ENTRY_OVERHEAD: usize = 64;

/// The sort key of a log line: its time, then its place in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub timestamp_ns: i64,
    pub file: u32,
    pub line: u64,
}

type Entry = (Key, Vec<u8>);

/// Collects entries, spilling sorted runs to `dir` past the budget.
pub struct ExternalSort {
    parent: PathBuf,
    dir: Option<tempfile::TempDir>,
    budget: usize,
    run: Vec<Entry>,
    run_bytes: usize,
    runs: Vec<PathBuf>,
    next_run: u64,
}

impl ExternalSort {
    /// Sorts in memory up to `budget_bytes`; spill files go to a new directory in `parent`.
    pub fn new(parent: &Path, budget_bytes: usize) -> ExternalSort {
        ExternalSort {
            parent: parent.to_path_buf(),
            dir: None,
            budget: budget_bytes,
            run: Vec::new(),
            run_bytes: 0,
            runs: Vec::new(),
            next_run: 0,
        }
    }

    /// How many runs went to disk so far.
    pub fn spilled_runs(&self) -> u64 {
        self.next_run
    }

    pub fn push(&mut self, key: Key, payload: Vec<u8>) -> io::Result<()> {
        self.run_bytes += payload.len() + ENTRY_OVERHEAD;
        self.run.push((key, payload));
        if self.run_bytes > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn new_run_path(&mut self) -> io::Result<PathBuf> {
        if self.dir.is_none() {
            std::fs::create_dir_all(&self.parent)?;
            self.dir = Some(tempfile::Builder::new().prefix("reprise-sort-").tempdir_in(&self.parent)?);
        }
        let path = self.dir.as_ref().expect("created above").path().join(format!("run-{:06}", self.next_run));
        self.next_run += 1;
        Ok(path)
    }

    fn spill(&mut self) -> io::Result<()> {
        let mut run = std::mem::take(&mut self.run);
        self.run_bytes = 0;
        run.sort_unstable_by_key(|(key, _)| *key);
        let path = self.new_run_path()?;
        let mut out = BufWriter::new(File::create(&path)?);
        for entry in &run {
            write_entry(&mut out, entry)?;
        }
        out.flush()?;
        self.runs.push(path);
        if self.runs.len() >= MAX_RUNS {
            self.compact()?;
        }
        Ok(())
    }

    /// Merges every run on disk into one.
    fn compact(&mut self) -> io::Result<()> {
        let runs = std::mem::take(&mut self.runs);
        let path = self.new_run_path()?;
        let mut out = BufWriter::new(File::create(&path)?);
        for entry in Merge::open(&runs, Vec::new())? {
            write_entry(&mut out, &entry?)?;
        }
        out.flush()?;
        for run in runs {
            std::fs::remove_file(run)?;
        }
        self.runs.push(path);
        Ok(())
    }

    /// Every entry pushed, in key order.
    pub fn finish(mut self) -> io::Result<Sorted> {
        self.run.sort_unstable_by_key(|(key, _)| *key);
        let merge = Merge::open(&self.runs, std::mem::take(&mut self.run))?;
        Ok(Sorted { merge, _dir: self.dir })
    }
}

/// The sorted entries; the spill files go when this is dropped.
pub struct Sorted {
    merge: Merge,
    _dir: Option<tempfile::TempDir>,
}

impl Iterator for Sorted {
    type Item = io::Result<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        self.merge.next()
    }
}

/// A k-way merge of sorted run files and one sorted run in memory.
struct Merge {
    readers: Vec<BufReader<File>>,
    memory: std::vec::IntoIter<Entry>,
    /// The head of each source: (key, source); the memory run is source `readers.len()`.
    heap: BinaryHeap<Reverse<(Key, usize)>>,
    heads: Vec<Option<Vec<u8>>>,
}

impl Merge {
    fn open(runs: &[PathBuf], memory: Vec<Entry>) -> io::Result<Merge> {
        let readers = runs
            .iter()
            .map(|p| Ok(BufReader::with_capacity(1 << 16, File::open(p)?)))
            .collect::<io::Result<Vec<_>>>()?;
        let sources = readers.len() + 1;
        let mut merge =
            Merge { readers, memory: memory.into_iter(), heap: BinaryHeap::new(), heads: vec![None; sources] };
        for source in 0..sources {
            merge.advance(source)?;
        }
        Ok(merge)
    }

    /// Reads the next entry of `source` into the heap.
    fn advance(&mut self, source: usize) -> io::Result<()> {
        let next = match self.readers.get_mut(source) {
            Some(reader) => read_entry(reader)?,
            None => self.memory.next(),
        };
        if let Some((key, payload)) = next {
            self.heads[source] = Some(payload);
            self.heap.push(Reverse((key, source)));
        }
        Ok(())
    }
}

impl Iterator for Merge {
    type Item = io::Result<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((key, source)) = self.heap.pop()?;
        let payload = self.heads[source].take().expect("a head for every heap entry");
        Some(self.advance(source).map(|()| (key, payload)))
    }
}

fn write_entry(out: &mut impl Write, (key, payload): &Entry) -> io::Result<()> {
    out.write_all(&key.timestamp_ns.to_le_bytes())?;
    out.write_all(&key.file.to_le_bytes())?;
    out.write_all(&key.line.to_le_bytes())?;
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(payload)
}

fn read_entry(input: &mut impl Read) -> io::Result<Option<Entry>> {
    let mut header = [0u8; 24];
    match input.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let key = Key {
        timestamp_ns: i64::from_le_bytes(header[..8].try_into().expect("8 bytes")),
        file: u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")),
        line: u64::from_le_bytes(header[12..20].try_into().expect("8 bytes")),
    };
    let mut payload = vec![0; u32::from_le_bytes(header[20..].try_into().expect("4 bytes")) as usize];
    input.read_exact(&mut payload)?;
    Ok(Some((key, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(second: i64, file: u32, line: u64) -> Key {
        Key { timestamp_ns: second * 1_000_000_000, file, line }
    }

    fn sort(entries: &[Entry], budget: usize) -> (Vec<Entry>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let mut sorter = ExternalSort::new(dir.path(), budget);
        for (k, p) in entries {
            sorter.push(*k, p.clone()).unwrap();
        }
        let spilled = sorter.spilled_runs();
        let sorted: Vec<Entry> = sorter.finish().unwrap().map(Result::unwrap).collect();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "spill files are removed");
        (sorted, spilled)
    }

    #[test]
    fn tiny_runs_spill_and_merge_into_the_in_memory_order() {
        // Two "servers" concatenated, each in its own order, with many lines per second.
        let mut entries = Vec::new();
        for (file, offset) in [(0u32, 0i64), (1, 3)] {
            for line in 0..500u64 {
                let second = (line as i64 * 7 + offset) % 40;
                entries.push((key(second, file, line), format!("{file}:{line}").into_bytes()));
            }
        }
        let mut expected = entries.clone();
        expected.sort_by_key(|(k, _)| *k);
        let (in_memory, none) = sort(&entries, usize::MAX);
        assert_eq!((in_memory.clone(), none), (expected.clone(), 0));
        // One entry per run: past MAX_RUNS the runs are compacted, and still merge right.
        let (spilled, runs) = sort(&entries, 1);
        assert!(runs > MAX_RUNS as u64, "{runs} runs");
        assert_eq!(spilled, expected);
        // Within one second, file order then line order.
        let second_zero: Vec<(u32, u64)> =
            spilled.iter().filter(|(k, _)| k.timestamp_ns == 0).map(|(k, _)| (k.file, k.line)).collect();
        assert!(second_zero.windows(2).all(|w| w[0] < w[1]), "{second_zero:?}");
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert_eq!(sort(&[], 10), (Vec::new(), 0));
    }
}
