"""Online booking: cases, slot search, holds, and the booking saga with the quota."""
