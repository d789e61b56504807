//! Who may use the control pipe on Windows: what mode 0600 and `SO_PEERCRED` do on Unix.
//!
//! - Every instance of the pipe is created with an owner-only security descriptor: its owner
//!   is this user and its DACL, protected from inheritance, allows this user alone.
//! - The first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`, so a pipe of the same
//!   name made first by someone else makes the holder fail instead of sharing it.
//! - Both ends look up the user of the process at the other end
//!   (`GetNamedPipeClientProcessId` / `GetNamedPipeServerProcessId`, then that process's token)
//!   and hang up unless it is this user.
//!
//! The only `unsafe` code in Ferry: the Win32 calls have no safe wrapper in a kept crate.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::os::windows::io::AsRawHandle;
use std::ptr::null_mut;

use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetLengthSid, GetTokenInformation, IsValidSid, TokenUser, PSECURITY_DESCRIPTOR,
    SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Pipes::{GetNamedPipeClientProcessId, GetNamedPipeServerProcessId};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

/// Closes a kernel handle when dropped.
struct Owned(HANDLE);

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the handle was returned open by the call that made this guard, and nothing
        // else closes it.
        unsafe { CloseHandle(self.0) };
    }
}

/// A user's security identifier, copied out of a process token.
#[derive(PartialEq, Eq)]
pub(super) struct UserSid(Vec<u8>);

impl std::fmt::Debug for UserSid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_sddl() {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("<SID>"),
        }
    }
}

impl UserSid {
    /// The user this process runs as.
    pub(super) fn of_this_process() -> io::Result<Self> {
        // SAFETY: the pseudo-handle of the current process needs no closing.
        unsafe { Self::of_process_handle(GetCurrentProcess()) }
    }

    /// The user process `pid` runs as.
    fn of_process(pid: u32) -> io::Result<Self> {
        // SAFETY: plain call; a null handle is an error.
        let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if process.is_null() {
            return Err(io::Error::last_os_error());
        }
        let process = Owned(process);
        // SAFETY: an open process handle with query rights.
        unsafe { Self::of_process_handle(process.0) }
    }

    /// # Safety
    /// `process` must be an open process handle with `PROCESS_QUERY_LIMITED_INFORMATION`.
    unsafe fn of_process_handle(process: HANDLE) -> io::Result<Self> {
        let mut token: HANDLE = null_mut();
        if OpenProcessToken(process, TOKEN_QUERY, &mut token) == 0 {
            return Err(io::Error::last_os_error());
        }
        let token = Owned(token);
        let mut len = 0u32;
        // Fails with ERROR_INSUFFICIENT_BUFFER and says how much room the answer needs.
        GetTokenInformation(token.0, TokenUser, null_mut(), 0, &mut len);
        if len == 0 || len > 64 * 1024 {
            return Err(io::Error::last_os_error());
        }
        // u64s, so the TOKEN_USER at the start is aligned.
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        if GetTokenInformation(token.0, TokenUser, buf.as_mut_ptr().cast(), len, &mut len) == 0 {
            return Err(io::Error::last_os_error());
        }
        let user = &*(buf.as_ptr() as *const TOKEN_USER);
        let sid = user.User.Sid;
        if sid.is_null() || IsValidSid(sid) == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the token's user is not a valid SID",
            ));
        }
        let n = GetLengthSid(sid) as usize;
        Ok(UserSid(
            std::slice::from_raw_parts(sid as *const u8, n).to_vec(),
        ))
    }

    /// The `S-1-5-…` form.
    fn to_sddl(&self) -> io::Result<String> {
        let mut text: *mut u16 = null_mut();
        // SAFETY: `self.0` holds a whole SID (checked by IsValidSid when it was copied); the
        // string returned is freed with LocalFree below.
        unsafe {
            if ConvertSidToStringSidW(self.0.as_ptr() as *mut c_void, &mut text) == 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(take_local_string(text))
        }
    }
}

/// Reads a NUL-terminated UTF-16 string that a Win32 call allocated, then frees it.
///
/// # Safety
/// `text` must be such a string, from `LocalAlloc`, not used after this.
unsafe fn take_local_string(text: *mut u16) -> String {
    let mut n = 0;
    while *text.add(n) != 0 {
        n += 1;
    }
    let s = String::from_utf16_lossy(std::slice::from_raw_parts(text, n));
    LocalFree(text.cast());
    s
}

/// Security attributes that let only this user open the pipe.
pub(super) struct OwnerOnly {
    descriptor: PSECURITY_DESCRIPTOR,
    attributes: SECURITY_ATTRIBUTES,
}

// SAFETY: the descriptor is a private heap block that is only read (by CreateNamedPipe) and
// freed once, on drop.
unsafe impl Send for OwnerOnly {}
unsafe impl Sync for OwnerOnly {}

impl std::fmt::Debug for OwnerOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerOnly")
    }
}

impl OwnerOnly {
    pub(super) fn new(me: &UserSid) -> io::Result<Box<Self>> {
        let sid = me.to_sddl()?;
        // O: owner; D:P a protected DACL (nothing inherited) with one entry: allow all to `sid`.
        let sddl = format!("O:{sid}D:P(A;;GA;;;{sid})");
        let wide: Vec<u16> = sddl.encode_utf16().chain(std::iter::once(0)).collect();
        let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: a NUL-terminated string; the descriptor returned is freed on drop.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wide.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut this = Box::new(OwnerOnly {
            descriptor,
            attributes: SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: null_mut(),
                bInheritHandle: 0,
            },
        });
        this.attributes.lpSecurityDescriptor = this.descriptor;
        Ok(this)
    }

    /// Creates one instance of the pipe at `path` with these attributes.
    pub(super) fn create(
        &self,
        path: &std::path::Path,
        first: bool,
    ) -> io::Result<tokio::net::windows::named_pipe::NamedPipeServer> {
        let mut options = tokio::net::windows::named_pipe::ServerOptions::new();
        options
            .first_pipe_instance(first)
            .reject_remote_clients(true);
        // SAFETY: the attributes and their descriptor live as long as `self`, and the call
        // only reads them.
        unsafe {
            options.create_with_security_attributes_raw(
                path,
                &self.attributes as *const SECURITY_ATTRIBUTES as *mut c_void,
            )
        }
    }
}

impl Drop for OwnerOnly {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW, freed once.
        unsafe { LocalFree(self.descriptor) };
    }
}

/// The user of the process at the other end of a connected pipe: the client's when
/// `server_side`, the server's otherwise.
pub(super) fn peer_user(pipe: &impl AsRawHandle, server_side: bool) -> io::Result<UserSid> {
    let handle = pipe.as_raw_handle() as HANDLE;
    let mut pid = 0u32;
    // SAFETY: a connected pipe handle, borrowed for the call.
    let ok = unsafe {
        if server_side {
            GetNamedPipeClientProcessId(handle, &mut pid)
        } else {
            GetNamedPipeServerProcessId(handle, &mut pid)
        }
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    UserSid::of_process(pid)
}

/// The owner and DACL of an open pipe, in SDDL (for tests).
#[cfg(test)]
pub(super) fn descriptor_of(pipe: &impl AsRawHandle) -> io::Result<String> {
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, GetSecurityInfo, SE_KERNEL_OBJECT,
    };
    use windows_sys::Win32::Security::{DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION};
    let what = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
    let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
    // SAFETY: a borrowed open handle; the descriptor and the string are freed with LocalFree.
    unsafe {
        let rc = GetSecurityInfo(
            pipe.as_raw_handle() as HANDLE,
            SE_KERNEL_OBJECT,
            what,
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut(),
            &mut descriptor,
        );
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc as i32));
        }
        let mut text: *mut u16 = null_mut();
        let ok = ConvertSecurityDescriptorToStringSecurityDescriptorW(
            descriptor,
            SDDL_REVISION_1,
            what,
            &mut text,
            null_mut(),
        );
        LocalFree(descriptor);
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(take_local_string(text))
    }
}

/// This user's SID in SDDL (for tests).
#[cfg(test)]
pub(super) fn my_sddl() -> io::Result<String> {
    UserSid::of_this_process()?.to_sddl()
}
