//! CPUs: which ones the process may run on, and pinning a core's thread to one.

/// The CPUs this process may run on (`sched_getaffinity(2)`), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: zeroed is a valid cpu_set_t; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; set is a valid out-pointer of the given size.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect();
    }
    // SAFETY: CPU_ISSET reads the set we own; indexes are below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Pins the calling thread to one CPU (`sched_setaffinity(2)`).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("cpu {cpu} out of range")));
    }
    // SAFETY: zeroed is a valid empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; set is valid for the given size.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_to_an_allowed_cpu_works() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let c = cpus[cpus.len() - 1];
        std::thread::spawn(move || {
            pin_current_thread(c).expect("pin");
            assert_eq!(allowed_cpus(), vec![c]);
        })
        .join()
        .expect("thread");
        assert!(pin_current_thread(1 << 20).is_err());
    }
}
