//! The PVH entry: from QEMU's 32-bit hand-off to Rust in long mode.
//!
//! QEMU loads the ELF, finds the `XEN_ELFNOTE_PHYS32_ENTRY` note and jumps to
//! `pvh_start32` in 32-bit protected mode with paging off and `%ebx` holding
//! the physical address of the `hvm_start_info` structure. The stub:
//!
//! 1. clears `.bss`, where its page tables and stack live;
//! 2. identity-maps 0..4 GiB with 2 MiB pages (one PML4 entry, one PDPT,
//!    four page directories);
//! 3. enables PAE, long mode and paging, loads a flat GDT and far-jumps to
//!    64-bit code;
//! 4. loads the data segments and the stack and calls
//!    `apex_rust_entry(start_info)`, which [`entry_point!`](crate::entry_point)
//!    defines.
//!
//! `boot_pml4` is global because the AP trampoline (`smp.rs`), assembled
//! separately, loads it too. There is no IDT: any exception triple-faults and
//! resets the VM, which `run.sh` reports as a failure.

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                     /* name size */
    .long 8                     /* descriptor size: QEMU reads a 64-bit address */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .text.boot, "ax", @progbits
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi              /* start_info; %esi survives to long mode */

    /* Clear .bss: page tables and the boot stack must start zeroed. */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* PML4[0] -> PDPT; PDPT[0..4] -> the four page directories. */
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $0x3, %eax
    mov %eax, boot_pdpt
    add $0x1000, %eax
    mov %eax, boot_pdpt + 8
    add $0x1000, %eax
    mov %eax, boot_pdpt + 16
    add $0x1000, %eax
    mov %eax, boot_pdpt + 24

    /* 2048 directory entries: present, writable, 2 MiB page at i << 21. */
    mov $boot_pd, %edi
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edi, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b

    mov %cr4, %eax
    or $0x20, %eax              /* PAE */
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $0x100, %eax             /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax        /* PG | PE */
    mov %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    mov %esi, %edi              /* apex_rust_entry(start_info) */
    call apex_rust_entry
2:  cli
    hlt
    jmp 2b

    .section .data.boot_gdt, "aw", @progbits
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
boot_gdt_ptr:
    .word 23
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .space 4096
boot_pdpt:
    .space 4096
boot_pd:
    .space 4 * 4096
boot_stack:
    .space 256 * 1024
boot_stack_top:
"#,
    options(att_syntax)
);
